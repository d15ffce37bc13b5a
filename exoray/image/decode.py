"""The one image decoder every phase uses: bytes in, bounded RGB uint8 out, or a DecodeError.

Why one function: every phase must agree on what an image *is* (orientation applied, alpha on
white, odd modes converted the same way) and on which files are bad, so that an error row from
Phase II means the same thing in Phase V. Bad input never escapes as anything but DecodeError,
so a pipeline can turn it into an error row instead of losing a batch.
"""

from __future__ import annotations

import contextlib
import io
import threading
from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image, ImageFile

from exoray.image.diagnose import ERROR_KINDS, DecodeError, claims_file, classify, unidentified
from exoray.image.extensions import register_optional_plugins

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "ERROR_KINDS",
    "DecodeError",
    "DecodedImage",
    "decode_image",
    "read_image_size",
]

DEFAULT_MAX_PIXELS = 100_000_000

# EPS needs Ghostscript run as a subprocess on load: never let a photo folder start programs.
_EXCLUDED_FORMATS = frozenset({"EPS"})

_COMMON_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "TIFF", "BMP", "HEIF", "AVIF")
# ISO-BMFF brands of AVIF: such a file goes to Pillow's AVIF plugin before pillow-heif, which
# also accepts the generic "mif1" brand but may lack an AV1 decoder.
_AVIF_BRANDS = frozenset({b"avif", b"avis"})

_ORIENTATION_TAG = 0x0112
# EXIF orientation -> the array operation that shows the image upright (same as Pillow's
# ImageOps.exif_transpose), done on the already reduced array because it is cheaper there.
_ORIENT: dict[int, Callable[[np.ndarray], np.ndarray]] = {
    2: lambda a: a[:, ::-1],
    3: lambda a: a[::-1, ::-1],
    4: lambda a: a[::-1],
    5: lambda a: a.transpose(1, 0, 2),
    6: lambda a: np.rot90(a, -1),
    7: lambda a: a[::-1, ::-1].transpose(1, 0, 2),
    8: lambda a: np.rot90(a, 1),
}
_SWAPS_AXES = frozenset({5, 6, 7, 8})

_init_lock = threading.Lock()
_plugins_loaded = False


@dataclass(frozen=True)
class DecodedImage:
    """Pixels plus what the header said, so callers never need to re-open the file."""

    rgb: np.ndarray  # (H, W, 3) uint8, C-contiguous; smaller than width x height if max_side
    width: int  # displayed width (after EXIF orientation) of the full image
    height: int
    mode: str  # original PIL mode, e.g. 'RGB', 'CMYK', 'P', 'I;16'
    format: str  # PIL format, e.g. 'JPEG', 'PNG'
    n_frames: int


def decode_image(
    data: bytes,
    *,
    name: str = "",
    max_side: int | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> DecodedImage:
    """Decode ``data`` to RGB uint8 (first frame, EXIF-oriented, alpha composited on white).

    With ``max_side`` the pixels are downscaled (never upscaled) so the long side is at most
    ``max_side``; JPEGs then use libjpeg's DCT scaling to a size still >= the target, which
    gives the same picture as full decode + resize several times faster.
    The size is checked against ``max_pixels`` from the header, before any pixel is decoded.
    """
    _check_args(data, name, max_side, max_pixels)
    im = _open(data, name)
    try:
        stored_w, stored_h = _check_pixels(im.size, max_pixels, name)
        mode, fmt = im.mode, str(im.format or "")
        try:
            n_frames = _frame_count(im)
            _check_pixels(im.size, max_pixels, name)  # a later GIF frame may grow the canvas
            target = _fit((stored_w, stored_h), max_side) if max_side is not None else None
            rgb = _webp_pixels(data, im, n_frames)
            if rgb is not None and target is not None:
                rgb = _box_reduce_array(rgb, target)
            if rgb is None:
                if target is not None:
                    im.draft(None, target)
                im.load()
                pil = _to_rgb(im, name)
                if target is not None:
                    pil = _box_reduce(pil, target)
                rgb = np.asarray(pil, dtype=np.uint8)
            # After decoding: for PNG, reading EXIF first would decode the image a second time.
            orientation = _orientation(im, allow_load=True)
            if target is not None:
                # Size from the header, not the DCT-scaled array, so draft and full decode
                # give exactly the same output size.
                have = (rgb.shape[1], rgb.shape[0])
                if target[0] > have[0] or target[1] > have[1]:
                    target = _fit(have, max_side)
                if target != have:
                    # INTER_AREA averages every source pixel (a proper antialiasing filter for
                    # downscaling) and is ~3x faster than Pillow's LANCZOS at these sizes.
                    rgb = cv2.resize(rgb, target, interpolation=cv2.INTER_AREA)
            if orientation in _ORIENT:
                rgb = _ORIENT[orientation](rgb)
        except DecodeError:
            raise
        except Exception as exc:  # Pillow and codecs raise many types: classify them all
            raise classify(exc, data, fmt, name) from exc
    finally:
        im.close()
    width, height = (stored_h, stored_w) if orientation in _SWAPS_AXES else (stored_w, stored_h)
    return DecodedImage(
        rgb=np.require(rgb, dtype=np.uint8, requirements=["C", "W"]),
        width=width,
        height=height,
        mode=mode,
        format=fmt,
        n_frames=n_frames,
    )


def _reduce_factor(size: tuple[int, int], target: tuple[int, int]) -> int:
    """The whole factor by which ``size`` can be box-averaged and stay >= ``target``."""
    return max(1, min(size[0] // target[0], size[1] // target[1]))


def _box_reduce(im: Image.Image, target: tuple[int, int]) -> Image.Image:
    """Shrink a much larger image by a whole factor first (Pillow's box ``reduce``), before it
    becomes an array: INTER_AREA then only finishes a < 2x step, instead of its slow
    fractional path over every source pixel plus a full-size copy (a PNG or WebP of several
    megapixels spent longer in the resize than in decoding)."""
    k = _reduce_factor(im.size, target)
    return im.reduce(k) if k >= 2 else im


def _box_reduce_array(rgb: np.ndarray, target: tuple[int, int]) -> np.ndarray:
    """:func:`_box_reduce` for an array (OpenCV's whole-factor INTER_AREA path; the < k
    leftover border rows and columns are dropped)."""
    h, w = rgb.shape[:2]
    k = _reduce_factor((w, h), target)
    if k < 2:
        return rgb
    return cv2.resize(rgb[: h // k * k, : w // k * k], (w // k, h // k),
                      interpolation=cv2.INTER_AREA)


def _webp_pixels(data: bytes, im: Image.Image, n_frames: int) -> np.ndarray | None:
    """A still RGB/RGBA WebP decoded by OpenCV's libwebp straight to an array, else None.

    Same pixels as Pillow's path (tested bit for bit), without Pillow's animation decoder and
    its RGBA round trip, which made WebP cost half again as much as its decode.
    """
    if im.format != "WEBP" or n_frames != 1 or im.mode not in ("RGB", "RGBA"):
        return None
    arr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if arr is None or arr.ndim != 3 or (arr.shape[1], arr.shape[0]) != im.size:
        return None  # Pillow's path decodes it, or says what is wrong with it
    if arr.shape[2] == 3:
        return cv2.cvtColor(arr, cv2.COLOR_BGR2RGB)
    if arr.shape[2] == 4:
        return np.asarray(_composite_on_white(cv2.cvtColor(arr, cv2.COLOR_BGRA2RGBA)))
    return None


def read_image_size(data: bytes, *, name: str = "") -> tuple[int, int]:
    """Displayed (width, height) from the header alone: cheap, decodes no pixels."""
    _check_args(data, name, None, 1)
    im = _open(data, name)
    try:
        w, h = im.size
        orientation = _orientation(im, allow_load=False)
    finally:
        im.close()
    return (h, w) if orientation in _SWAPS_AXES else (w, h)


# --------------------------------------------------------------------------- internals


def _check_args(data: object, name: str, max_side: int | None, max_pixels: int) -> None:
    """Reject wrong argument types/values (caller bugs) with ValueError/TypeError, not DecodeError."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(
            f"{name or 'image'}: expected the file's bytes, got {type(data).__name__}; "
            "read the file in binary mode ('rb')"
        )
    if max_side is not None and (isinstance(max_side, bool) or int(max_side) < 1):
        raise ValueError(f"max_side must be a positive integer or None, got {max_side!r}")
    if isinstance(max_pixels, bool) or int(max_pixels) < 1:
        raise ValueError(f"max_pixels must be a positive integer, got {max_pixels!r}")
    if len(data) == 0:
        raise DecodeError("empty", name, "0 bytes")


def _check_pixels(size: tuple[int, int], max_pixels: int, name: str) -> tuple[int, int]:
    """``size`` if within ``max_pixels``, else a "bomb" error: checked before pixels exist."""
    w, h = size
    if w * h > max_pixels:
        raise DecodeError("bomb", name, f"{w}x{h} = {w * h:,} pixels exceeds max_pixels="
                          f"{max_pixels:,}")
    return w, h


def _ensure_plugins() -> None:
    """Load every Pillow format plugin once (thread-safe), so identification sees them all.

    That includes pillow-heif's HEIC/HEIF opener when it is installed: the scan lists those
    files (see :mod:`exoray.image.extensions`), so every process that decodes them needs it.
    """
    global _plugins_loaded
    if _plugins_loaded:
        return
    with _init_lock:
        if not _plugins_loaded:
            Image.init()
            # A broken pillow-heif install must not stop the other formats: its files then
            # get "unsupported ... pip install pillow-heif" error rows.
            with contextlib.suppress(ImportError, OSError):
                register_optional_plugins()
            _plugins_loaded = True


def _open(data: bytes, name: str) -> ImageFile.ImageFile:
    """Identify the format and parse the header, like ``Image.open`` without its bomb check.

    ``Image.open`` compares against the process-global ``Image.MAX_IMAGE_PIXELS`` and warns or
    raises by itself; we apply our own per-call ``max_pixels`` instead, so no global state is
    touched. (A few plugins check Pillow's limit inside, e.g. GIF frames, ICO/ICNS entries:
    that surfaces as kind "bomb" too.)
    """
    _ensure_plugins()
    fp = io.BytesIO(data)
    prefix = bytes(data[:16])
    notes: list[str] = []
    for fmt in _format_order(data):
        factory, accept = Image.OPEN[fmt]
        try:
            accepted = True if accept is None else accept(prefix)
        except Exception:  # e.g. struct.error on a 3-byte file: simply not this format
            continue
        if isinstance(accepted, str):
            notes.append(accepted)  # Pillow's "recognised, but support is missing"
            continue
        if not accepted:
            continue
        try:
            fp.seek(0)
            return factory(fp, "")
        except Exception as exc:
            # A broken file of a format with a real signature: stop, or a header-guessing
            # format (TGA, ...) might "read" it. Otherwise "not this format", as in Pillow's
            # own open loop.
            if claims_file(fmt, data):
                raise classify(exc, data, fmt, name) from exc
    raise unidentified(data, name, notes)


def _format_order(data: bytes) -> list[str]:
    """Pillow's formats, common photo formats first and header-guessing ones (no magic) last."""
    registered = [f for f in Image.ID if f in Image.OPEN and f not in _EXCLUDED_FORMATS]
    common = [f for f in _COMMON_FORMATS if f in registered]
    if "AVIF" in common and _ftyp_brands(data) & _AVIF_BRANDS:
        common.insert(0, common.pop(common.index("AVIF")))
    guessers = [f for f in registered if Image.OPEN[f][1] is None]
    rest = [f for f in registered if f not in common and f not in guessers]
    return common + rest + guessers


def _ftyp_brands(data: bytes) -> set[bytes]:
    """The major and compatible brands of an ISO-BMFF (HEIF/AVIF/...) ``ftyp`` box, else {}."""
    if bytes(data[4:8]) != b"ftyp":
        return set()
    end = min(int.from_bytes(bytes(data[:4]), "big"), len(data), 1024)
    return {bytes(data[i : i + 4]) for i in (8, *range(16, end - 3, 4))}


def _orientation(im: Image.Image, *, allow_load: bool) -> int:
    """EXIF orientation 1-8; a damaged EXIF block must not make a good image fail, so it means 1."""
    if not allow_load and im.format == "PNG" and "exif" not in im.info:
        return 1  # Pillow would decode the whole PNG to look for a trailing eXIf chunk
    try:
        value = im.getexif().get(_ORIENTATION_TAG, 1)
        return int(value) if int(value) in range(1, 9) else 1
    except Exception:  # corrupt EXIF: documented fallback to "not rotated"
        return 1


def _frame_count(im: Image.Image) -> int:
    """Frames (or PSD layers), leaving ``im`` on the frame it was opened at.

    An opened image already shows its first frame, and that is what we decode; seeking to 0
    would be wrong because not every format starts at 0 (PSD's layers are frames 1..n, the
    merged image is what it opens on). Counting may move GIF/WebP, so return to the start.
    """
    first = im.tell()
    count = int(getattr(im, "n_frames", 1))
    if im.tell() != first:
        im.seek(first)
    return max(1, count)  # a PSD without layers reports 0 frames, yet is one image


def _fit(size: tuple[int, int], max_side: int) -> tuple[int, int]:
    """Size with long side <= max_side, aspect kept, never upscaled, never below 1 px."""
    w, h = size
    long_side = max(w, h)
    if long_side <= max_side:
        return (w, h)
    scale = max_side / long_side
    return (max(1, round(w * scale)), max(1, round(h * scale)))


def _to_rgb(im: Image.Image, name: str) -> Image.Image:
    """Convert any Pillow mode to RGB: alpha over white, high bit depths scaled by range."""
    mode = im.mode
    if mode == "RGB":
        return im
    if mode in ("RGBA", "LA", "PA", "RGBa", "La") or (mode == "P" and "transparency" in im.info):
        return _composite_on_white(np.asarray(im.convert("RGBA")))
    if mode in ("L", "1", "P", "CMYK", "YCbCr", "RGBX", "HSV"):
        return im.convert("RGB")
    if mode.startswith("I;16") or mode in ("I", "F"):
        return Image.fromarray(_scale_to_uint8(np.asarray(im), mode)).convert("RGB")
    try:
        return im.convert("RGB")
    except ValueError as exc:
        raise DecodeError("unsupported", name, f"pixel mode {mode!r} cannot become RGB") from exc


def _composite_on_white(rgba: np.ndarray) -> Image.Image:
    """Blend straight-alpha RGBA over white in integer math (exact, and uint16 cannot overflow)."""
    alpha = rgba[..., 3:4].astype(np.uint16)
    rgb = rgba[..., :3].astype(np.uint16)
    out = (rgb * alpha + 255 * (255 - alpha) + 127) // 255
    return Image.fromarray(out.astype(np.uint8), "RGB")


def _scale_to_uint8(arr: np.ndarray, mode: str) -> np.ndarray:
    """Map 16/32-bit or float pixels to 0..255 by their range, never by clipping at 255.

    16-bit data keeps its exposure (value / 257). 'I' values inside 0..65535 are treated as
    16-bit; other 'I' and 'F' data are stretched min..max ('F' already in 0..1 is kept as is).
    """
    if mode.startswith("I;16"):
        wide = arr.astype(np.uint32)  # also turns big-endian data native
        return ((wide * 255 + 32767) // 65535).astype(np.uint8)
    a = arr.astype(np.float64, copy=False)
    finite = np.isfinite(a)
    if not finite.all():
        a = np.where(finite, a, 0.0)
    lo, hi = (float(a.min()), float(a.max())) if a.size else (0.0, 0.0)
    if mode == "I" and lo >= 0 and hi <= 65535:
        scaled = a * (255.0 / 65535.0)
    elif mode == "F" and lo >= 0 and hi <= 1:
        scaled = a * 255.0
    elif hi > lo:
        scaled = (a - lo) * (255.0 / (hi - lo))
    else:
        scaled = np.zeros_like(a)
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)
