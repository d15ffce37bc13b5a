"""The one image decoder every phase uses: bytes in, bounded RGB uint8 out, or a DecodeError.

Why one function: every phase must agree on what an image *is* (orientation applied, alpha on
white, odd modes converted the same way) and on which files are bad, so that an error row from
Phase II means the same thing in Phase V. Bad input never escapes as anything but DecodeError,
so a pipeline can turn it into an error row instead of losing a batch.
"""

from __future__ import annotations

import functools
import io
import struct
import threading
from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image, ImageFile, TiffImagePlugin, UnidentifiedImageError

DEFAULT_MAX_PIXELS = 100_000_000

ERROR_KINDS = ("empty", "truncated", "not_image", "bomb", "unsupported", "corrupt")

# EPS needs Ghostscript run as a subprocess on load: never let a photo folder start programs.
_EXCLUDED_FORMATS = frozenset({"EPS"})

_COMMON_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "TIFF", "BMP", "HEIF", "AVIF")
# Formats whose signature is long enough that a match means "a (broken) file of this format".
_STRONG_MAGIC = frozenset(
    {"JPEG", "MPO", "PNG", "GIF", "WEBP", "TIFF", "JPEG2000", "PSD", "ICNS", "ICO", "QOI"}
)
# BMP's magic is only "BM"; followed by a known DIB header size it is strong enough.
_BMP_HEADER_SIZES = frozenset({12, 16, 40, 52, 56, 64, 108, 124})
_BMP_EMBEDDED = {4: "a JPEG stream inside the BMP", 5: "a PNG stream inside the BMP"}
_BMP_COMPRESSIONS = frozenset({0, 1, 2, 3, 4, 5, 6, 11, 12, 13})  # all the format defines
_BMP_DEPTHS = frozenset({1, 2, 4, 8, 16, 24, 32, 64})
# Registered TIFF compressions Pillow has no decoder for; any other unknown value is damage.
_TIFF_CODECS = {9: "JBIG T.85", 10: "JBIG2 T.43", 32766: "NeXT", 32895: "IT8 CT", 32896: "IT8 LW",
                32897: "IT8 MP", 32898: "IT8 BL", 32908: "PixarFilm", 32909: "PixarLog",
                32947: "Kodak DCS", 34661: "JBIG", 34712: "JPEG 2000", 34713: "Nikon NEF",
                34887: "LERC", 34892: "lossy JPEG (DNG)", 50002: "JPEG XL", 52546: "JPEG XL (DNG)",
                65000: "Kodak DCR"}
_TIFF_PHOTOMETRICS = frozenset({0, 1, 2, 3, 4, 5, 6, 8, 9, 10, 32803, 32844, 32845, 34892})
# libtiff codecs a build may leave out and Pillow can write, so their presence is testable.
_TIFF_PROBED = frozenset({"jpeg", "lzma", "zstd", "webp", "tiff_lzw", "tiff_adobe_deflate",
                          "tiff_deflate", "packbits", "group3", "group4"})
_SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}

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

_FIXES = {
    "empty": "the file has no bytes; re-copy or re-export it",
    "truncated": "the file ends early (interrupted copy or download); re-copy or re-export it",
    "not_image": "the bytes are not an image format Pillow can read; remove or convert the file",
    "bomb": "raise --max-pixels if the image is genuine, otherwise remove it",
    "unsupported": "convert it to PNG or JPEG with another program (ImageMagick, GIMP, ...) "
    "or install a Pillow plugin for it",
    "corrupt": "the image data is damaged; re-export the file or remove it",
}

_init_lock = threading.Lock()
_plugins_loaded = False


class DecodeError(Exception):
    """An image that cannot be decoded; ``kind`` is one of ERROR_KINDS, for error rows."""

    def __init__(self, kind: str, name: str, detail: str) -> None:
        if kind not in ERROR_KINDS:
            raise ValueError(f"unknown DecodeError kind {kind!r}; valid kinds: {ERROR_KINDS}")
        self.kind = kind
        self.name = name
        self.detail = detail
        super().__init__(f"{name or '<bytes>'}: {kind}: {detail}; {_FIXES[kind]}")

    def __reduce__(self) -> tuple[Callable[..., DecodeError], tuple[str, str, str]]:
        # Ray ships exceptions between processes by pickling; keep the three fields.
        return (DecodeError, (self.kind, self.name, self.detail))


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
            if max_side is not None:
                im.draft(None, _fit((stored_w, stored_h), max_side))
            im.load()
            # After load(): for PNG, reading EXIF first would decode the image a second time.
            orientation = _orientation(im, allow_load=True)
            rgb = np.asarray(_to_rgb(im, name), dtype=np.uint8)
            if max_side is not None:
                # Size from the header, not the DCT-scaled array, so draft and full decode
                # give exactly the same output size.
                have = (rgb.shape[1], rgb.shape[0])
                target = _fit((stored_w, stored_h), max_side)
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
            raise _classify(exc, data, fmt, name) from exc
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
    """Load every Pillow format plugin once (thread-safe), so identification sees them all."""
    global _plugins_loaded
    if _plugins_loaded:
        return
    with _init_lock:
        if not _plugins_loaded:
            Image.init()
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
    for fmt in _format_order():
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
            # A format with a real signature (PNG, JPEG, ...) that fails to parse is a broken
            # file of that format: stop, or a header-guessing format (TGA, ...) might "read"
            # it. Weak 2-4 byte magics (PCX, PPM, DIB, ...) just mean "not this format", as in
            # Pillow's own open loop.
            if fmt in _STRONG_MAGIC or _is_real_bmp(fmt, data):
                raise _classify(exc, data, fmt, name) from exc
    if notes:
        raise DecodeError("unsupported", name, "; ".join(notes))
    head = bytes(data[:8])
    if head[:1] in (b"<", b"{", b"#") or _mostly_text(bytes(data[:512])):
        what = "text, not image data"
    else:
        what = f"unrecognised bytes starting {head!r}"
    raise DecodeError("not_image", name, f"{what} ({len(data):,} bytes)")


def _format_order() -> list[str]:
    """Pillow's formats, common photo formats first and header-guessing ones (no magic) last."""
    registered = [f for f in Image.ID if f in Image.OPEN and f not in _EXCLUDED_FORMATS]
    common = [f for f in _COMMON_FORMATS if f in registered]
    guessers = [f for f in registered if Image.OPEN[f][1] is None]
    rest = [f for f in registered if f not in common and f not in guessers]
    return common + rest + guessers


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


def _classify(exc: BaseException, data: bytes, fmt: str, name: str) -> DecodeError:
    """Turn any decoder failure into a DecodeError of the right kind."""
    if isinstance(exc, DecodeError):
        return exc
    detail = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    where = f"{fmt} " if fmt else ""
    if isinstance(exc, (Image.DecompressionBombError, Image.DecompressionBombWarning)):
        return DecodeError("bomb", name, f"{where}image: {detail}")
    if isinstance(exc, MemoryError):
        return DecodeError("bomb", name, f"{where}image too large for available memory")
    explained = _explain(exc, bytes(data), fmt, name)
    if explained is not None:
        return explained
    if isinstance(exc, UnidentifiedImageError):
        return DecodeError("not_image", name, detail)
    text = str(exc).lower()
    if text == "not identified by this driver":  # Pillow's words for "size <= 0 or no mode"
        return DecodeError("corrupt", name, f"{where}header declares no valid size or pixel mode")
    if "not available" in text or "not supported" in text or "unsupported" in text:
        return DecodeError("unsupported", name, f"{where}image: {detail}")
    if isinstance(exc, EOFError) or "truncated" in text or _looks_truncated(data, fmt):
        return DecodeError("truncated", name, f"{where}image: {detail}")
    return DecodeError("corrupt", name, f"{where}image: {detail}")


def _explain(exc: BaseException, data: bytes, fmt: str, name: str) -> DecodeError | None:
    """Say what is really wrong where Pillow's exception alone would mislead (None: no idea).

    A 0-pixel side makes Pillow say "not identified" or "tile cannot extend outside image",
    and a compression it lacks shows as a bare KeyError or "decoder error -2".
    """
    try:
        return _diagnose(str(exc), data, fmt, name)
    except Exception:  # a header too broken to read by hand: the generic classification applies
        return None


def _diagnose(text: str, data: bytes, fmt: str, name: str) -> DecodeError | None:
    """The header facts behind a failure, read by hand; raises on headers too short to read."""
    size = _declared_size(data, fmt)
    if size is not None:
        what, w, h = size
        if fmt in ("JPEG", "MPO") and w > 0 and h == 0:
            return DecodeError("unsupported", name, "JPEG height 0 in the frame header (set "
                               "later by a DNL marker, which Pillow cannot read)")
        if w == 0 or h == 0:
            return DecodeError("corrupt", name, f"{fmt} {what} declares a {w}x{h} image; a width "
                               "or height of 0 is invalid")
    if _is_real_bmp(fmt, data):
        return _explain_bmp(text, data, name)
    return _explain_tiff(text, _tiff_tags(data), name) if fmt == "TIFF" else None


def _explain_tiff(text: str, tags: dict[int, object], name: str) -> DecodeError | None:
    """A compression or pixel layout Pillow/libtiff lacks ("unsupported"), or one no TIFF has."""
    code = tags.get(259, 1)
    if code not in TiffImagePlugin.COMPRESSION_INFO:
        if code not in _TIFF_CODECS:
            return DecodeError("corrupt", name, f"TIFF compression tag holds {code}, which is no "
                               "TIFF compression scheme")
        return DecodeError("unsupported", name, f"TIFF compression {code} ({_TIFF_CODECS[code]}) "
                           "is not supported by Pillow")
    if "unknown pixel mode" in text or "unknown data organization" in text:
        photometric, bits, formats = tags.get(262, 0), tags.get(258, 0), tags.get(339, 1)
        layout = (f"photometric {photometric}, {tags.get(277, 1)} samples of {bits} bits, "
                  f"sample format {formats}")
        if (photometric in _TIFF_PHOTOMETRICS and all(1 <= b <= 64 for b in _as_tuple(bits))
                and all(1 <= f <= 6 for f in _as_tuple(formats))):
            return DecodeError("unsupported", name, f"TIFF pixel layout ({layout}) is not "
                               "supported by Pillow")
        return DecodeError("corrupt", name, f"TIFF header declares an impossible pixel layout "
                           f"({layout})")
    codec = TiffImagePlugin.COMPRESSION_INFO[code]
    if "decoder error" in text and not _libtiff_decodes(codec):
        return DecodeError("unsupported", name, f"TIFF compression {codec!r} ({code}): this "
                           "Pillow's libtiff was built without it")
    return None


def _explain_bmp(text: str, data: bytes, name: str) -> DecodeError:
    """A real BMP Pillow refused: an odd-but-valid variant ("unsupported") or a broken header."""
    bits, code = struct.unpack_from("<HI", data, 28) if data[14] != 12 else (data[24], 0)
    if code in _BMP_EMBEDDED:  # Pillow complains first about their bit count of 0
        return DecodeError("unsupported", name, f"BMP compression {code}: {_BMP_EMBEDDED[code]}, "
                           f"which Pillow cannot read ({text})")
    if code not in _BMP_COMPRESSIONS or bits not in _BMP_DEPTHS or "Palette size" in text:
        return DecodeError("corrupt", name, f"BMP header declares {bits} bits per pixel, "
                           f"compression {code}: no valid BMP looks like this ({text})")
    kind = "unsupported" if "unsupported" in text.lower() else "corrupt"
    return DecodeError(kind, name, f"BMP image: {text}")


def _as_tuple(value: object) -> tuple[int, ...]:
    """A TIFF tag value as a tuple of ints (Pillow gives a scalar or a tuple)."""
    return tuple(int(v) for v in value) if isinstance(value, tuple) else (int(value),)


def _declared_size(data: bytes, fmt: str) -> tuple[str, int, int] | None:
    """(where, width, height) as the header states it; Pillow never reports a 0 size."""
    if fmt == "PNG" and data[12:16] == b"IHDR":
        return ("header", *struct.unpack(">II", data[16:24]))
    if fmt == "GIF":
        return _gif_first_frame(data)
    if _is_real_bmp(fmt, data):  # OS/2 1.x headers have 16-bit sizes, later ones signed 32-bit
        w, h = struct.unpack_from("<HH" if data[14] == 12 else "<ii", data, 18)
        return ("header", abs(w), abs(h))
    if fmt in ("JPEG", "MPO"):
        pos = 2
        while pos + 9 <= len(data) and data[pos] == 0xFF and data[pos + 1] != 0xDA:
            if data[pos + 1] in _SOF_MARKERS:
                h, w = struct.unpack(">HH", data[pos + 5 : pos + 9])
                return ("frame header", w, h)
            pos += 2 + int.from_bytes(data[pos + 2 : pos + 4], "big")
    if fmt == "TIFF":
        tags = _tiff_tags(data)
        return ("first page", int(tags.get(256, 1)), int(tags.get(257, 1)))
    return None


def _gif_first_frame(data: bytes) -> tuple[str, int, int]:
    """The first image descriptor's size (Pillow grows the screen to it), else the screen's."""
    pos = 13 + (3 << ((data[10] & 7) + 1) if data[10] & 0x80 else 0)
    while pos < len(data) and data[pos] == 0x21:  # extension: label, then sub-blocks
        pos += 2
        while pos < len(data) and data[pos]:
            pos += data[pos] + 1
        pos += 1
    if pos + 9 <= len(data) and data[pos] == 0x2C:
        return ("first frame", *struct.unpack("<HH", data[pos + 5 : pos + 9]))
    return ("screen", *struct.unpack("<HH", data[6:10]))


def _tiff_tags(data: bytes) -> dict[int, object]:
    """The first IFD's tags, read with Pillow's own parser but without opening the image."""
    big = data[2:4] in (b"\x2b\x00", b"\x00\x2b")
    fp = io.BytesIO(data)
    ifd = TiffImagePlugin.ImageFileDirectory_v2(fp.read(16 if big else 8))
    fp.seek(ifd.next)
    ifd.load(fp)
    return dict(ifd)


@functools.cache
def _libtiff_decodes(codec: str) -> bool:
    """Whether this Pillow's libtiff round-trips ``codec``: builds leave out WebP, ZSTD, ...

    Codecs that cannot be probed (decode-only ones) count as present, so their failures stay
    "corrupt" rather than blaming the build.
    """
    if codec not in _TIFF_PROBED:
        return True
    buf = io.BytesIO()
    try:
        Image.new("1" if codec.startswith("group") else "RGB", (1, 1)).save(
            buf, "TIFF", compression=codec
        )
        with Image.open(io.BytesIO(buf.getvalue())) as im:
            im.load()
    except Exception:  # any failure of a 1-pixel round trip means the codec is missing
        return False
    return True


def _is_real_bmp(fmt: str, data: bytes) -> bool:
    """'BM' plus a known DIB header size: a BMP, so Pillow's failure is the file's story."""
    return fmt == "BMP" and int.from_bytes(data[14:18], "little") in _BMP_HEADER_SIZES


def _looks_truncated(data: bytes, fmt: str) -> bool:
    """After a failure: does the container say bytes are missing? (Only a hint, never a check.)"""
    tail = bytes(data[-64:])
    if fmt in ("JPEG", "MPO"):
        return b"\xff\xd9" not in tail
    if fmt == "PNG":
        return b"IEND" not in tail
    if fmt == "GIF":
        return not tail.endswith(b";")
    if fmt == "WEBP" and len(data) >= 8 and bytes(data[:4]) == b"RIFF":
        return int.from_bytes(bytes(data[4:8]), "little") + 8 > len(data)
    return False


def _mostly_text(head: bytes) -> bool:
    """True when the first bytes look like text (so the message can say 'text file')."""
    if not head:
        return False
    printable = sum(32 <= b < 127 or b in (9, 10, 13) for b in head)
    return printable / len(head) > 0.95
