"""Synthetic image sets with ground truth, for tests, the demo and benchmarks.

Why synthetic: tests and benchmarks need images whose answers are known (this one is blurred,
these five are near-duplicates, that file is truncated) and that can be made offline, quickly
and identically on every machine. Every image is rendered from its own seed, so a set is
reproducible byte for byte for a given seed and library versions.

Scene content is built so that perceptual hashes behave like those of real photos: each
independent scene gets its own low-frequency layout (chosen from a code book of 8x8 DCT sign
patterns that differ in many bits), on top of which shapes, colours and noise textures vary.
Unrelated scenes therefore differ in pHash by far more than a near-duplicate does.
"""

from __future__ import annotations

import io
import json
import math
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from exoray.image.decode import DecodeError, decode_image

FORMATS = ("jpg", "png", "webp")
_PIL_FORMAT = {"jpg": "JPEG", "png": "PNG", "webp": "WEBP"}
_FOLDERS = ("", "holiday", "holiday/beach", "work/scans", "misc/2023/raw")
_WORDS = (
    "OPEN", "SALE", "EXIT", "CAFE", "HOTEL", "MARKET", "STATION", "NORTH", "RIVER", "GARDEN",
    "MUSEUM", "BAKERY", "PARKING", "LIBRARY", "SUMMER", "WINTER", "HARBOR", "BRIDGE", "TICKETS",
    "WELCOME", "PHARMACY", "BOOKS", "PIZZA", "TAXI", "POST", "BANK", "SCHOOL", "THEATRE",
)  # fmt: skip
_NEAR_DUP_VARIANTS = ("resized", "recompressed", "cropped", "brightness")
_EXPOSURE_TARGET = {"dark": (0.07, 0.15), "normal": (0.38, 0.60), "light": (0.84, 0.92)}
_BOMB_SIDE = 30_000


@dataclass
class _Item:
    """One planned file: where it goes, how to render it, and its ground truth."""

    relpath: str
    kind: str
    seed: int
    size: tuple[int, int] = (0, 0)  # displayed (width, height)
    ext: str = "jpg"
    code: np.ndarray = field(default_factory=lambda: np.zeros((8, 8), bool))
    exposure: str = "normal"
    blurred: bool = False
    grayscale: bool = False
    flat: bool = False
    text: str | None = None
    near_dup_group: int | None = None
    variant: str | None = None
    exact_dup_of: str | None = None
    corrupt: bool = False
    decode_error: str | None = None
    n_frames: int | None = 1

    def truth(self) -> dict[str, Any]:
        """The truth.json record (sizes are the displayed size a decoder must report)."""
        return {
            "kind": self.kind,
            "blurred": self.blurred,
            "exposure": self.exposure,
            "grayscale": self.grayscale,
            "flat": self.flat,
            "text": self.text,
            "near_dup_group": self.near_dup_group,
            "variant": self.variant,
            "exact_dup_of": self.exact_dup_of,
            "corrupt": self.corrupt,
            "decode_error": self.decode_error,
            "width": None if self.corrupt else self.size[0],
            "height": None if self.corrupt else self.size[1],
            "n_frames": None if self.corrupt else self.n_frames,
        }


def make_image_set(
    out_dir: str | Path,
    n: int = 200,
    *,
    seed: int = 0,
    corrupt: bool = False,
    min_side: int = 64,
    max_megapixels: float = 3.0,
    formats: tuple[str, ...] | list[str] = FORMATS,
    min_megapixels: float = 0.0,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Write ``n`` files under ``out_dir`` plus ``out_dir/truth.json``; return the truth dict.

    ``n`` counts every file, including the 11 special files added with ``corrupt=True``
    (5 undecodable, 6 odd but valid). ``formats`` picks the encodings of ordinary images;
    ``min_megapixels``/``max_megapixels`` bound their sizes (benchmarks use
    ``formats=("jpg",), min_megapixels=1.0``). ``overwrite=True`` first removes the files of
    a set previously written there (those listed in its truth.json), and nothing else.

    truth["images"][relpath] (posix, relative to out_dir) holds: ``kind`` (scene, blurred,
    dark, light, grayscale, flat, text, near_dup, exact_dup; with corrupt=True also empty,
    truncated, random_bytes, text_file, bomb, cmyk, gray16, palette_alpha, rgba, exif_rotated,
    animated_gif), ``blurred``, ``exposure`` (dark|normal|light), ``grayscale``, ``flat``,
    ``text`` (the rendered lines, joined by newlines), ``near_dup_group`` and ``variant``
    (source|resized|recompressed|cropped|brightness), ``exact_dup_of``, ``corrupt``,
    ``decode_error`` (the DecodeError kind a decoder must raise), and the displayed
    ``width``/``height`` and ``n_frames`` (None for corrupt files).
    """
    out = Path(out_dir)
    formats = _check_options(n, corrupt, min_side, min_megapixels, max_megapixels, formats)
    _prepare_dir(out, overwrite)
    rng = np.random.default_rng(seed)
    sizer = _Sizer(rng, min_side, min_megapixels, max_megapixels)
    items, groups = _plan(rng, n, corrupt, formats, sizer)

    def write(relpath: str, data: bytes) -> None:
        path = out / relpath
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)

    for group in groups:  # written as rendered: a 2,000-image set never sits in memory
        for relpath, data in _render_group(group, min_side).items():
            write(relpath, data)
    for item in items:
        if item.near_dup_group is None and item.exact_dup_of is None:
            write(item.relpath, _render_item(item))
    for item in items:
        if item.exact_dup_of is not None:
            write(item.relpath, (out / item.exact_dup_of).read_bytes())
    truth = {
        "seed": seed,
        "n": len(items),
        "images": {it.relpath: it.truth() for it in sorted(items, key=lambda it: it.relpath)},
    }
    (out / "truth.json").write_text(json.dumps(truth, indent=1, ensure_ascii=False) + "\n", "utf-8")
    return truth


# --------------------------------------------------------------------------- planning


def _check_options(
    n: int,
    corrupt: bool,
    min_side: int,
    min_mp: float,
    max_mp: float,
    formats: tuple[str, ...] | list[str],
) -> tuple[str, ...]:
    """Validate arguments up front, naming the bad value and the valid choices."""
    if isinstance(formats, str):
        formats = (formats,)
    fmts = tuple(f.lower().lstrip(".").replace("jpeg", "jpg") for f in formats)
    bad = [f for f in fmts if f not in FORMATS]
    if bad or not fmts:
        raise ValueError(f"unknown image formats {bad or formats!r}; choose from {FORMATS}")
    need = 12 if corrupt else 1
    if n < need:
        raise ValueError(f"n={n} is too small: need at least {need} (corrupt={corrupt})")
    if min_side < 8:
        raise ValueError(f"min_side={min_side} is too small; use 8 or more")
    if not 0 <= min_mp <= max_mp:
        raise ValueError(
            f"need 0 <= min_megapixels ({min_mp}) <= max_megapixels ({max_mp}); fix the bounds"
        )
    if 3 * min_side * min_side > max_mp * 1e6:
        raise ValueError(
            f"max_megapixels={max_mp} cannot hold a 3:1 image with min_side={min_side}; "
            "raise max_megapixels or lower min_side"
        )
    return fmts


def _prepare_dir(out: Path, overwrite: bool) -> None:
    """Refuse to mix a new set into a non-empty folder (truth.json would not match the files)."""
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"{out} exists and is not a folder; choose a folder path")
    if out.exists() and any(out.iterdir()):
        old_truth = out / "truth.json"
        if not overwrite or not old_truth.exists():
            raise FileExistsError(
                f"{out} is not empty; choose an empty or new folder"
                + ("" if old_truth.exists() else " (it holds no synthetic set to overwrite)")
                + ("" if overwrite else ", or pass overwrite=True to replace a previous set")
            )
        old = json.loads(old_truth.read_text("utf-8"))
        for relpath in old.get("images", {}):
            (out / relpath).unlink(missing_ok=True)
        old_truth.unlink()
        for folder in sorted((p for p in out.rglob("*") if p.is_dir()), reverse=True):
            if not any(folder.iterdir()):
                folder.rmdir()
    out.mkdir(parents=True, exist_ok=True)


class _Sizer:
    """Draws image sizes: mostly small, a few large, aspect ratios 1:3 to 3:1."""

    def __init__(self, rng: np.random.Generator, min_side: int, min_mp: float, max_mp: float):
        self.rng, self.min_side, self.max_px = rng, min_side, max_mp * 1e6
        self.lo = max(min_mp, 3 * min_side * min_side / 1e6, 0.02)
        self.lo = min(self.lo, max_mp)
        self.mid = min(max(self.lo, 0.4), max_mp)

    def draw(self, *, large: bool = False) -> tuple[int, int]:
        """One (width, height); ``large`` forces one close to the maximum size."""
        rng = self.rng
        hi_mp = self.max_px / 1e6
        if large:
            mp = hi_mp * rng.uniform(0.9, 1.0)
        elif rng.random() < 0.1 or self.mid <= self.lo:
            mp = math.exp(rng.uniform(math.log(self.mid), math.log(hi_mp)))
        else:
            mp = math.exp(rng.uniform(math.log(self.lo), math.log(self.mid)))
        aspect = math.exp(rng.uniform(math.log(1 / 3), math.log(3)))
        w = math.sqrt(mp * 1e6 * aspect)
        h = w / aspect
        if min(w, h) < self.min_side:
            scale = self.min_side / min(w, h)
            w, h = w * scale, h * scale
        w, h = max(self.min_side, round(w)), max(self.min_side, round(h))
        while w * h > self.max_px:  # clamp the long side, keep the short side >= min_side
            if w >= h:
                w = max(self.min_side, int(self.max_px // h))
            else:
                h = max(self.min_side, int(self.max_px // w))
        return int(w), int(h)


def _plan(
    rng: np.random.Generator,
    n: int,
    corrupt: bool,
    formats: tuple[str, ...],
    sizer: _Sizer,
) -> tuple[list[_Item], list[list[_Item]]]:
    """Decide every file's category, size, format, folder and seed (all from ``rng``)."""
    specials = _SPECIALS if corrupt else ()
    m = n - len(specials)
    n_groups = max(1, m // 40) if m >= 12 else 0
    n_exact = max(1, m // 60) if m >= 8 else 0
    quotas = {
        "flat": 0.05,
        "text": 0.08,
        "blurred": 0.15,
        "dark": 0.10,
        "light": 0.10,
        "grayscale": 0.10,
    }
    counts = {k: int(v * m) if m >= 10 else 0 for k, v in quotas.items()}
    n_scene = m - 5 * n_groups - n_exact - sum(counts.values())
    kinds = ["scene"] * n_scene + [k for k, c in counts.items() for _ in range(c)]
    kinds = [kinds[i] for i in rng.permutation(len(kinds))]

    codes = _CodeBook(rng)
    items: list[_Item] = []

    def new_item(kind: str, ext: str, name: str | None = None, folder: str | None = None) -> _Item:
        index = len(items)
        folder = str(rng.choice(_FOLDERS)) if folder is None else folder
        stem = f"img_{index:05d}" if name is None else name
        relpath = f"{folder}/{stem}.{ext}" if folder else f"{stem}.{ext}"
        item = _Item(relpath=relpath, kind=kind, seed=int(rng.integers(2**63)), ext=ext)
        items.append(item)
        return item

    def pick_ext() -> str:
        return str(rng.choice(formats))

    first_scene = True
    for kind in kinds:
        item = new_item(kind, pick_ext())
        item.size = sizer.draw(large=first_scene and kind == "scene")
        first_scene = first_scene and kind != "scene"
        item.code = codes.next()
        if kind in ("dark", "light"):
            item.exposure = kind
        item.blurred = kind == "blurred"
        item.grayscale = kind == "grayscale"
        item.flat = kind == "flat"
        if kind == "text":
            item.text = _pick_text(rng)

    groups: list[list[_Item]] = []
    for g in range(n_groups):
        source = new_item("near_dup", pick_ext())
        source.size, source.code = sizer.draw(), codes.next()
        source.near_dup_group, source.variant = g, "source"
        members = [source]
        for variant in _NEAR_DUP_VARIANTS:
            ext = "jpg" if variant == "recompressed" and "jpg" in formats else pick_ext()
            copy = new_item("near_dup", ext)
            copy.near_dup_group, copy.variant = g, variant
            members.append(copy)
        groups.append(members)

    plain = [it for it in items if it.kind == "scene" and it.near_dup_group is None]
    _rename_specials(plain)
    for k in range(n_exact):
        original = plain[(k * 7) % len(plain)] if plain else items[0]
        folder = next(f for f in _FOLDERS if not original.relpath.startswith(f + "/") and f)
        stem = "copy_of_" + Path(original.relpath).stem
        dup = new_item("exact_dup", original.ext, name=stem, folder=folder)
        for attr in ("size", "exposure", "blurred", "grayscale", "flat", "text", "n_frames"):
            setattr(dup, attr, getattr(original, attr))
        dup.exact_dup_of = original.relpath

    for kind, ext, folder in specials:
        item = new_item(kind, ext, name=kind, folder=folder)
        item.size = (int(rng.integers(200, 420)), int(rng.integers(150, 320)))
        item.code = codes.next()
        _SPECIAL_TRUTH[kind](item)
    return items, groups


def _rename_specials(plain: list[_Item]) -> None:
    """Two unrelated files share a name in different folders; one has a non-ASCII name."""
    if len(plain) >= 3:
        a, b, c = plain[-1], plain[-2], plain[-3]
        a.relpath = f"holiday/photo.{a.ext}"
        b.ext = a.ext
        b.relpath = f"work/scans/photo.{b.ext}"
        c.relpath = f"misc/café_ünïcødé_写真.{c.ext}"


def _pick_text(rng: np.random.Generator) -> str:
    """One to three short lines of capitalised words (what an OCR test should read back)."""
    lines = []
    for _ in range(int(rng.integers(1, 4))):
        words = rng.choice(_WORDS, size=int(rng.integers(1, 3)), replace=False)
        lines.append(" ".join(str(w) for w in words))
    return "\n".join(lines)


class _CodeBook:
    """Balanced 8x8 sign patterns (pHash layouts), greedily kept far apart in Hamming distance.

    Each new pattern is the best of 64 random balanced candidates: the one farthest from every
    pattern handed out so far (min distance 24 for a 200-image set, vs ~18 for plain random).
    """

    _TRIES = 64
    _WEIGHTS = np.left_shift(np.uint64(1), np.arange(64, dtype=np.uint64))

    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng
        self.packed = np.zeros(0, np.uint64)

    def next(self) -> np.ndarray:
        """A new (8, 8) bool pattern; element [0, 0] (the DC term) is always True."""
        order = self.rng.random((self._TRIES, 63)).argsort(axis=1)[:, :31]
        cand = np.zeros((self._TRIES, 64), bool)
        cand[:, 0] = True
        np.put_along_axis(cand[:, 1:], order, True, axis=1)
        packed = (cand.astype(np.uint64) * self._WEIGHTS).sum(axis=1, dtype=np.uint64)
        best = 0
        if len(self.packed):
            best = int(_popcount(packed[:, None] ^ self.packed[None, :]).min(axis=1).argmax())
        self.packed = np.append(self.packed, packed[best])
        return cand[best].reshape(8, 8)


def _popcount(x: np.ndarray) -> np.ndarray:
    """Set bits per uint64 element (numpy >= 2 has it built in; else count per byte)."""
    if hasattr(np, "bitwise_count"):
        return np.bitwise_count(x)
    table = np.array([bin(i).count("1") for i in range(256)], np.uint8)
    as_bytes = np.ascontiguousarray(x).view(np.uint8).reshape(*x.shape, 8)
    return table[as_bytes].sum(axis=-1)


# --------------------------------------------------------------------------- rendering


def _scene(rng: np.random.Generator, size: tuple[int, int], code: np.ndarray) -> np.ndarray:
    """A natural-ish RGB scene: smooth coded layout, colour washes, shapes, textures."""
    w, h = size
    # Low-frequency layout from the code: the sign of each of the 8x8 lowest DCT terms.
    coeffs = np.zeros((32, 32), np.float32)
    u, v = np.mgrid[0:8, 0:8]
    mags = rng.uniform(0.75, 1.25, (8, 8)) / (1.0 + 0.3 * (u + v))
    coeffs[:8, :8] = np.where(code, 1.0, -1.0) * mags
    coeffs[0, 0] = 0.0
    layout = cv2.idct(coeffs)
    layout = (layout - layout.min()) / max(float(np.ptp(layout)), 1e-6)

    # Colour: a dark-to-light two-colour ramp over the layout plus a luma-free hue wash.
    small_w, small_h = (
        (64, max(2, round(64 * h / w))) if w >= h else (max(2, round(64 * w / h)), 64)
    )
    t = cv2.resize(layout, (small_w, small_h), interpolation=cv2.INTER_CUBIC)[..., None]
    dark = rng.uniform(0, 80, 3)
    light = rng.uniform(170, 255, 3)
    img = dark + np.clip(t, 0, 1) * (light - dark)
    wash = cv2.resize(
        rng.uniform(-1, 1, (3, 3)).astype(np.float32),
        (small_w, small_h),
        interpolation=cv2.INTER_CUBIC,
    )
    hue = rng.normal(0, 1, 3)
    hue -= hue @ np.array([0.299, 0.587, 0.114])  # no luma: keeps the layout's pHash
    img = img + wash[..., None] * (25 * hue / max(float(np.abs(hue).max()), 1e-6))
    img = cv2.resize(np.clip(img, 0, 255).astype(np.uint8), (w, h), interpolation=cv2.INTER_CUBIC)

    _draw_shapes(rng, img)
    _add_texture(rng, img)
    return img


def _draw_shapes(rng: np.random.Generator, img: np.ndarray) -> None:
    """A few smallish opaque shapes with crisp anti-aliased edges (the 'objects')."""
    h, w = img.shape[:2]
    short = min(w, h)
    for _ in range(int(rng.integers(4, 11))):
        color = tuple(int(c) for c in rng.integers(0, 256, 3))
        cx, cy = int(rng.integers(0, w)), int(rng.integers(0, h))
        r = max(2, int(short * rng.uniform(0.02, 0.07)))
        shape = rng.integers(0, 3)
        if shape == 0:
            cv2.circle(img, (cx, cy), r, color, -1, cv2.LINE_AA)
        elif shape == 1:
            cv2.rectangle(img, (cx - r, cy - r // 2), (cx + r, cy + r // 2), color, -1, cv2.LINE_AA)
        else:
            pts = np.array([[cx + r * math.cos(a), cy + r * math.sin(a)] for a in
                            rng.uniform(0, 2 * math.pi, 5).tolist()], np.int32)  # fmt: skip
            cv2.fillPoly(img, [cv2.convexHull(pts)], color, cv2.LINE_AA)
        if rng.random() < 0.5:  # a thin line, like a branch or a wire
            x2, y2 = int(rng.integers(0, w)), int(rng.integers(0, h))
            cv2.line(img, (cx, cy), (x2, y2), color, max(1, short // 200), cv2.LINE_AA)


def _add_texture(rng: np.random.Generator, img: np.ndarray) -> None:
    """Mid-frequency mottling plus fine grain, in place (what makes sharp images sharp)."""
    h, w = img.shape[:2]
    cells = (max(2, w // 8), max(2, h // 8))
    mottle = rng.integers(-14, 15, (cells[1], cells[0]), dtype=np.int16).astype(np.float32)
    noise = cv2.resize(mottle, (w, h), interpolation=cv2.INTER_LINEAR)
    grain = np.frombuffer(rng.bytes(w * h), np.uint8).reshape(h, w)
    noise += (grain & 15).astype(np.float32) - 7.5
    # Split into positive and negative parts so saturating uint8 add/subtract can apply it.
    pos = cv2.convertScaleAbs(cv2.threshold(noise, 0, 0, cv2.THRESH_TOZERO)[1])
    neg = cv2.convertScaleAbs(cv2.threshold(noise, 0, 0, cv2.THRESH_TOZERO_INV)[1])
    cv2.add(img, cv2.merge([pos, pos, pos]), dst=img)
    cv2.subtract(img, cv2.merge([neg, neg, neg]), dst=img)


def _expose(img: np.ndarray, exposure: str, rng: np.random.Generator) -> np.ndarray:
    """Tone-map so mean luma lands in the exposure's band (a monotone curve keeps pHash)."""
    lo, hi = _EXPOSURE_TARGET[exposure]
    target = rng.uniform(lo, hi)
    thumb = cv2.resize(img, (64, 64), interpolation=cv2.INTER_AREA)
    y = cv2.cvtColor(thumb, cv2.COLOR_RGB2GRAY).astype(np.float64) / 255.0
    x = np.arange(256) / 255.0

    def curve(values: np.ndarray, gamma: float) -> np.ndarray:
        if exposure == "dark":
            return 0.45 * values**gamma
        if exposure == "light":
            return 1.0 - 0.45 * (1.0 - values) ** gamma
        return values**gamma

    brighter_with_gamma = exposure == "light"  # else the mean falls as gamma grows
    lo_g, hi_g = 0.05, 20.0  # bisection on log(gamma)
    for _ in range(40):
        g = math.sqrt(lo_g * hi_g)
        mean = float(curve(y, g).mean())
        if (mean < target) == brighter_with_gamma:
            lo_g = g
        else:
            hi_g = g
    lut = np.clip(np.rint(curve(x, math.sqrt(lo_g * hi_g)) * 255), 0, 255).astype(np.uint8)
    return cv2.LUT(img, lut)


def _flat(rng: np.random.Generator, size: tuple[int, int]) -> np.ndarray:
    """A low-information image: one mid-tone colour, a faint gradient, a little noise."""
    w, h = size
    base = rng.integers(90, 171, 3)
    ramp = np.rint(np.linspace(-3, 3, w)).astype(np.int16) * int(rng.choice([-1, 1]))
    grain = np.frombuffer(rng.bytes(w * h), np.uint8).reshape(h, w) % 3
    offset = grain.astype(np.int16) - 1 + ramp[None, :]
    channels = [np.clip(offset + int(c), 0, 255).astype(np.uint8) for c in base]
    return cv2.merge(channels)


def _draw_text(rng: np.random.Generator, img: np.ndarray, text: str) -> np.ndarray:
    """Render ``text`` large, white with a dark outline, so OCR can read it back."""
    h, w = img.shape[:2]
    pil = Image.fromarray(img)
    draw = ImageDraw.Draw(pil)
    lines = text.split("\n")
    size = max(12, min(160, int(h / (len(lines) + 1.5))))
    while True:
        font = ImageFont.load_default(size=size)
        stroke = max(1, size // 14)
        boxes = [draw.textbbox((0, 0), line, font=font, stroke_width=stroke) for line in lines]
        widest = max(b[2] - b[0] for b in boxes)
        line_h = max(b[3] - b[1] for b in boxes) * 1.25
        if (widest <= 0.9 * w and line_h * len(lines) <= 0.9 * h) or size <= 10:
            break
        size = max(10, int(size * 0.85))
    x0 = int(rng.uniform(0.02, max(0.03, 0.98 - widest / w)) * w)
    y0 = int(rng.uniform(0.02, max(0.03, 0.98 - line_h * len(lines) / h)) * h)
    for k, line in enumerate(lines):
        draw.text((x0, y0 + int(k * line_h)), line, font=font, fill=(255, 255, 255),
                  stroke_width=stroke, stroke_fill=(0, 0, 0))  # fmt: skip
    return np.asarray(pil).copy()


def _blur(img: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur; wide ones run at reduced size (same look, many times faster)."""
    factor = int(sigma // 2)
    if factor < 2:
        return cv2.GaussianBlur(img, (0, 0), sigma)
    h, w = img.shape[:2]
    small = cv2.resize(
        img, (max(1, w // factor), max(1, h // factor)), interpolation=cv2.INTER_AREA
    )
    small = cv2.GaussianBlur(small, (0, 0), sigma / factor)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)


def _encode(img: np.ndarray, ext: str, rng: np.random.Generator, **kw: Any) -> bytes:
    """Encode with plausible, fast settings (JPEG q 80-95, PNG level 1, WebP q ~80)."""
    buf = io.BytesIO()
    pil = Image.fromarray(img)
    if ext == "jpg":
        kw.setdefault("quality", int(rng.integers(80, 96)))
    elif ext == "png":
        kw.setdefault("compress_level", 1)
    else:
        kw.setdefault("quality", int(rng.integers(75, 91)))
        kw.setdefault("method", 0)
    pil.save(buf, _PIL_FORMAT[ext], **kw)
    return buf.getvalue()


def _render_item(item: _Item) -> bytes:
    """Pixels and bytes for one independent item (its own seed: reproducible alone)."""
    rng = np.random.default_rng(item.seed)
    if item.kind in _SPECIAL_RENDER:
        return _SPECIAL_RENDER[item.kind](item, rng)
    if item.flat:
        return _encode(_flat(rng, item.size), item.ext, rng)
    img = _expose(_scene(rng, item.size, item.code), item.exposure, rng)
    if item.text:
        img = _draw_text(rng, img, item.text)
    if item.blurred:
        img = _blur(img, sigma=max(2.0, 3.0 * max(item.size) / 512))
    if item.grayscale:
        gray = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)
        # Half are stored as 1-channel files, half as RGB with equal channels (JPEG then adds
        # chroma noise, which is what real scanned/converted gray photos look like).
        img = gray if rng.random() < 0.5 else cv2.merge([gray, gray, gray])
    return _encode(img, item.ext, rng)


def _render_group(group: list[_Item], min_side: int) -> dict[str, bytes]:
    """A source scene and its near-duplicates: resized, recompressed, cropped, brightened."""
    source = group[0]
    rng = np.random.default_rng(source.seed)
    img = _expose(_scene(rng, source.size, source.code), "normal", rng)
    out = {source.relpath: _encode(img, source.ext, rng)}
    h, w = img.shape[:2]
    for copy in group[1:]:
        if copy.variant == "resized":
            f = rng.uniform(0.5, 0.75)
            size = (max(min_side, round(w * f)), max(min_side, round(h * f)))
            pixels = cv2.resize(img, size, interpolation=cv2.INTER_AREA)
            data = _encode(pixels, copy.ext, rng)
        elif copy.variant == "recompressed":
            pixels = img
            data = _encode(img, copy.ext, rng, quality=int(rng.integers(35, 55)))
        elif copy.variant == "cropped":
            dx, dy = max(1, round(0.03 * w)), max(1, round(0.03 * h))
            left, top = int(rng.integers(0, dx + 1)), int(rng.integers(0, dy + 1))
            pixels = img[top : h - (dy - top), left : w - (dx - left)].copy()
            data = _encode(pixels, copy.ext, rng)
        else:
            shift = int(rng.integers(12, 25)) * int(rng.choice([-1, 1]))
            pixels = (
                cv2.add(img, np.full_like(img, abs(shift)))
                if shift > 0
                else cv2.subtract(img, np.full_like(img, abs(shift)))
            )
            data = _encode(pixels, copy.ext, rng)
        copy.size = (pixels.shape[1], pixels.shape[0])
        out[copy.relpath] = data
    return out


# --------------------------------------------------------------------------- special files

# (kind, extension, folder) of the files added with corrupt=True: 5 bad, 6 odd but valid.
_SPECIALS: tuple[tuple[str, str, str], ...] = (
    ("empty", "jpg", "incoming"),
    ("truncated", "jpg", "incoming"),
    ("random_bytes", "jpg", "incoming/phone"),
    ("text_file", "png", "incoming"),
    ("bomb", "png", "incoming/phone"),
    ("cmyk", "jpg", "odd"),
    ("gray16", "png", "odd"),
    ("palette_alpha", "png", "odd"),
    ("rgba", "png", "odd"),
    ("exif_rotated", "jpg", "odd"),
    ("animated_gif", "gif", "odd"),
)


def _mark_corrupt(error: str) -> Any:
    def apply(item: _Item) -> None:
        item.corrupt, item.decode_error, item.n_frames = True, error, None

    return apply


def _mark_valid(**attrs: Any) -> Any:
    def apply(item: _Item) -> None:
        for key, value in attrs.items():
            setattr(item, key, value)

    return apply


_SPECIAL_TRUTH = {
    "empty": _mark_corrupt("empty"),
    "truncated": _mark_corrupt("truncated"),
    "random_bytes": _mark_corrupt("not_image"),
    "text_file": _mark_corrupt("not_image"),
    "bomb": _mark_corrupt("bomb"),
    "cmyk": _mark_valid(),
    "gray16": _mark_valid(grayscale=True),
    "palette_alpha": _mark_valid(),
    "rgba": _mark_valid(),
    "exif_rotated": _mark_valid(),
    "animated_gif": _mark_valid(n_frames=4),
}


def _special_scene(item: _Item, rng: np.random.Generator) -> np.ndarray:
    return _expose(_scene(rng, item.size, item.code), "normal", rng)


def _render_empty(item: _Item, rng: np.random.Generator) -> bytes:
    return b""


def _render_truncated(item: _Item, rng: np.random.Generator) -> bytes:
    data = _encode(_special_scene(item, rng), "jpg", rng)
    return data[: max(1024, int(len(data) * 0.4))]


def _render_random(item: _Item, rng: np.random.Generator) -> bytes:
    """Random bytes that no decoder accepts (redrawn in the rare case a weak magic matches)."""
    for _ in range(20):
        data = rng.bytes(int(rng.integers(2_000, 20_000)))
        try:
            decode_image(data)
        except DecodeError as exc:
            if exc.kind == "not_image":
                return data
    raise RuntimeError("could not draw random bytes that are not an image; try another seed")


def _render_text_file(item: _Item, rng: np.random.Generator) -> bytes:
    return (
        b"This is not a PNG image.\n"
        b"It is a plain text file that was given an image extension by mistake.\n"
    )


def _render_bomb(item: _Item, rng: np.random.Generator) -> bytes:
    """A ~100-byte PNG whose header declares 30000x30000 pixels (900 MP)."""

    def chunk(tag: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(tag + body) & 0xFFFFFFFF
        return len(body).to_bytes(4, "big") + tag + body + crc.to_bytes(4, "big")

    side = _BOMB_SIDE.to_bytes(4, "big")
    ihdr = side + side + bytes([1, 0, 0, 0, 0])  # 1-bit grayscale
    idat = zlib.compress(bytes(1 + _BOMB_SIDE // 8) * 4, 9)  # a few rows; the rest is missing
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def _render_cmyk(item: _Item, rng: np.random.Generator) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(_special_scene(item, rng)).convert("CMYK").save(buf, "JPEG", quality=90)
    return buf.getvalue()


def _render_gray16(item: _Item, rng: np.random.Generator) -> bytes:
    gray = cv2.cvtColor(_special_scene(item, rng), cv2.COLOR_RGB2GRAY).astype(np.uint16) * 256
    gray += rng.integers(0, 256, gray.shape, dtype=np.uint16)  # real 16-bit detail in low bits
    buf = io.BytesIO()
    Image.fromarray(gray).save(buf, "PNG")  # mode I;16
    return buf.getvalue()


def _render_palette_alpha(item: _Item, rng: np.random.Generator) -> bytes:
    pal = Image.fromarray(_special_scene(item, rng)).quantize(colors=255)
    idx = np.array(pal)
    w, h = item.size
    yy, xx = np.ogrid[:h, :w]
    hole = (xx - w / 2) ** 2 + (yy - h / 2) ** 2 < (min(w, h) / 6) ** 2
    idx[hole] = 255  # the transparent palette entry
    out = Image.fromarray(idx, "P")
    palette = (pal.getpalette() or [])[: 255 * 3]
    out.putpalette(palette + [0] * (768 - len(palette)))
    buf = io.BytesIO()
    out.save(buf, "PNG", transparency=255)
    return buf.getvalue()


def _render_rgba(item: _Item, rng: np.random.Generator) -> bytes:
    rgb = _special_scene(item, rng)
    alpha = np.full(rgb.shape[:2], 255, np.uint8)
    alpha[:, : rgb.shape[1] // 3] = 0  # left third fully transparent
    alpha[:, rgb.shape[1] // 3 : rgb.shape[1] // 2] = 128
    buf = io.BytesIO()
    Image.fromarray(np.dstack([rgb, alpha]), "RGBA").save(buf, "PNG", compress_level=1)
    return buf.getvalue()


def _render_exif_rotated(item: _Item, rng: np.random.Generator) -> bytes:
    """Store the scene rotated 90 degrees counter-clockwise with EXIF orientation 6, so a viewer
    (and decode_image) rotates it back clockwise to the intended ``item.size``."""
    shown = _special_scene(item, rng)
    shown[: max(4, item.size[1] // 8), : max(4, item.size[0] // 8)] = (255, 0, 0)  # red top-left
    exif = Image.Exif()
    exif[0x0112] = 6
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(np.rot90(shown, 1))).save(
        buf, "JPEG", quality=92, exif=exif
    )
    return buf.getvalue()


def _render_animated_gif(item: _Item, rng: np.random.Generator) -> bytes:
    base = _special_scene(item, rng)
    w, h = item.size
    frames = []
    for k in range(4):
        frame = base.copy()
        cv2.circle(frame, (int(w * (0.2 + 0.2 * k)), h // 2), max(4, h // 8), (255, 255, 0), -1)
        frames.append(Image.fromarray(frame).quantize(colors=128))
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:], duration=120, loop=0)
    return buf.getvalue()


_SPECIAL_RENDER = {
    "empty": _render_empty,
    "truncated": _render_truncated,
    "random_bytes": _render_random,
    "text_file": _render_text_file,
    "bomb": _render_bomb,
    "cmyk": _render_cmyk,
    "gray16": _render_gray16,
    "palette_alpha": _render_palette_alpha,
    "rgba": _render_rgba,
    "exif_rotated": _render_exif_rotated,
    "animated_gif": _render_animated_gif,
}
