"""Why an image failed to decode: Pillow's failure -> DecodeError(kind) + a one-line message.

Why a module of its own: Pillow's exceptions do not say what is wrong with a file (a 0-pixel
side reads "not identified by this driver", a compression this build lacks is a bare KeyError
or "decoder error -2", a cut-off JPEG may be "broken data stream"). An error row must tell the
user which file, what kind of problem (one of ERROR_KINDS, so rows can be counted by kind) and
what to do about it, so the headers of the formats where Pillow misleads are read here by hand.
Nothing in this module ever raises while diagnosing; a header too broken to read falls back
to the generic classification.
"""

from __future__ import annotations

import functools
import io
import struct
from collections.abc import Callable

from PIL import Image, TiffImagePlugin, UnidentifiedImageError

ERROR_KINDS = ("empty", "truncated", "not_image", "bomb", "unsupported", "corrupt")

_FIXES = {
    "empty": "the file has no bytes; re-copy or re-export it",
    "truncated": "the file ends early (interrupted copy or download); re-copy or re-export it",
    "not_image": "the bytes are not an image format Pillow can read; remove or convert the file",
    "bomb": "raise --max-pixels if the image is genuine, otherwise remove it",
    "unsupported": "convert it to PNG or JPEG with another program (ImageMagick, GIMP, ...) "
    "or install a Pillow plugin for it",
    "corrupt": "the image data is damaged; re-export the file or remove it",
}

# Formats whose signature is long enough that a match means "a (broken) file of this format"
# (HEIF/AVIF: "ftyp" plus one of their brands).
_STRONG_MAGIC = frozenset({"JPEG", "MPO", "PNG", "GIF", "WEBP", "TIFF", "JPEG2000", "PSD", "ICNS",
                           "ICO", "QOI", "HEIF", "AVIF"})
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
# ISO-BMFF major brands of still images no opener here accepted: what to install for them.
_HEIF_BRANDS = frozenset({b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"mif1", b"msf1"})
_AVIF_BRANDS = frozenset({b"avif", b"avis"})


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


def claims_file(fmt: str, data: bytes) -> bool:
    """Whether ``fmt`` matching ``data`` means "a file of this format", so its failure is final.

    A format with a real signature (PNG, JPEG, ...) that fails to parse is a broken file of that
    format; weak 2-4 byte magics (PCX, PPM, DIB, ...) only mean "maybe this format".
    """
    return fmt in _STRONG_MAGIC or _is_real_bmp(fmt, data)


def unidentified(data: bytes, name: str, notes: list[str]) -> DecodeError:
    """The error for bytes no opener accepted; ``notes`` are Pillow's "support is missing" words."""
    if notes:
        return DecodeError("unsupported", name, "; ".join(notes))
    head = bytes(data[:8])
    brand = bytes(data[8:12]) if head[4:8] == b"ftyp" else b""
    if brand in _HEIF_BRANDS and "HEIF" not in Image.OPEN:
        return DecodeError("unsupported", name, f"HEIC/HEIF image (brand {brand.decode()!r}) and "
                           "pillow-heif is not installed; pip install pillow-heif")
    if brand in _AVIF_BRANDS:
        return DecodeError("unsupported", name, "AVIF image and this Pillow has no AVIF codec; "
                           "install Pillow>=11.3 wheels")
    if head[:1] in (b"<", b"{", b"#") or _mostly_text(bytes(data[:512])):
        what = "text, not image data"
    else:
        what = f"unrecognised bytes starting {head!r}"
    return DecodeError("not_image", name, f"{what} ({len(data):,} bytes)")


def classify(exc: BaseException, data: bytes, fmt: str, name: str) -> DecodeError:
    """Turn any decoder failure into a DecodeError of the right kind."""
    if isinstance(exc, DecodeError):
        return exc
    words = " ".join(str(exc).split())  # one line: libheif ends its messages with a newline
    detail = f"{type(exc).__name__}: {words}" if words else type(exc).__name__
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
    if any(w in text for w in ("not available", "not supported", "unsupported", "not been built")):
        return DecodeError("unsupported", name, f"{where}image: {detail}")
    if isinstance(exc, EOFError) or "truncated" in text or "end of file" in text or (
        _looks_truncated(data, fmt)
    ):
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
    if fmt in ("HEIF", "AVIF"):
        return _boxes_overrun(data)
    return False


def _boxes_overrun(data: bytes) -> bool:
    """Whether the top-level ISO-BMFF boxes (ftyp, meta, mdat, ...) run past the end of data."""
    pos = 0
    while pos + 8 <= len(data):
        size = int.from_bytes(bytes(data[pos : pos + 4]), "big")
        if size == 1 and pos + 16 <= len(data):  # 64-bit size follows the type
            size = int.from_bytes(bytes(data[pos + 8 : pos + 16]), "big")
        if size == 0:  # the box runs to the end of the file
            return False
        if size < 8:
            return False  # not a box structure we can judge: no hint
        pos += size
    return pos > len(data)


def _mostly_text(head: bytes) -> bool:
    """True when the first bytes look like text (so the message can say 'text file')."""
    if not head:
        return False
    printable = sum(32 <= b < 127 or b in (9, 10, 13) for b in head)
    return printable / len(head) > 0.95
