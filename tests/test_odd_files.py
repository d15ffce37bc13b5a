"""Odd, exotic and hostile files (generated here): each decodes to the right RGB picture or fails
as a DecodeError of the right kind whose message names the file; nothing else ever escapes."""

from __future__ import annotations

import io
import math
import struct
import zlib
from collections.abc import Callable

import numpy as np
import pillow_heif
import pytest
from PIL import Image, features

from exoray.image.cheap_features import compute_features
from exoray.image.decode import ERROR_KINDS, DecodeError, decode_image, read_image_size

NAME = "odd/fuzzed file.img"


def encode(im: Image.Image, fmt: str, **kw: object) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    return buf.getvalue()


def solid(mode: str, size: tuple[int, int], colour: object) -> Image.Image:
    return Image.new(mode, size, colour)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- file generators


def bmp(width: int, height: int, bpp: int, compression: int = 0, *, pixels: bytes = b"",
        masks: tuple[int, int, int] | None = None, palette: int = 0) -> bytes:
    """A BMP (BITMAPINFOHEADER) with any fields, for variants Pillow cannot write."""
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, bpp, compression, len(pixels),
                       2835, 2835, palette, 0)
    extra = struct.pack("<3I", *masks) if masks else b""
    pal = bytes(4 * palette)
    offset = 14 + len(info) + len(extra) + len(pal)
    head = b"BM" + struct.pack("<IHHI", offset + len(pixels), 0, 0, offset)
    return head + info + extra + pal + pixels


def gif_frame_offset(data: bytes) -> int:
    """Offset of the first image descriptor (',') in a GIF written by Pillow."""
    pos = 13 + (3 << ((data[10] & 7) + 1) if data[10] & 0x80 else 0)
    while data[pos] == 0x21:  # extension blocks: skip their sub-blocks
        pos += 2
        while data[pos]:
            pos += data[pos] + 1
        pos += 1
    assert data[pos] == 0x2C
    return pos


def gif(screen: tuple[int, int] | None = None, frame: tuple[int, int] | None = None) -> bytes:
    """A valid 10x10 GIF whose screen and/or first-frame size fields are overwritten."""
    data = bytearray(encode(solid("P", (10, 10), 1), "GIF"))
    if screen is not None:
        data[6:10] = struct.pack("<HH", *screen)
    if frame is not None:
        pos = gif_frame_offset(bytes(data))
        data[pos + 5 : pos + 9] = struct.pack("<HH", *frame)
    return bytes(data)


def png_chunk(tag: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + tag + body + struct.pack(">I", zlib.crc32(tag + body))


def png_with_size(width: int, height: int) -> bytes:
    """A gray PNG whose IHDR (valid CRC) declares width x height; data for a few rows only."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(bytes(1 + min(width, 64)) * 2)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", idat)
            + png_chunk(b"IEND", b""))


def tiff_with_tags(**tags: int) -> bytes:
    """An 8x8 RGB TIFF with some IFD0 values overwritten (compression=..., width=..., ...)."""
    ids = {"compression": 259, "width": 256, "height": 257, "photometric": 262}
    data = bytearray(encode(solid("RGB", (8, 8), (200, 10, 10)), "TIFF"))
    end = "<" if data[:2] == b"II" else ">"
    ifd = struct.unpack(end + "I", data[4:8])[0]
    (count,) = struct.unpack(end + "H", data[ifd : ifd + 2])
    want = {ids[k]: v for k, v in tags.items()}
    for i in range(count):
        entry = ifd + 2 + 12 * i
        tag, typ = struct.unpack(end + "HH", data[entry : entry + 4])
        if tag in want:
            data[entry + 2 : entry + 4] = struct.pack(end + "H", 4)  # LONG, fits any value
            data[entry + 8 : entry + 12] = struct.pack(end + "I", want.pop(tag))
    assert not want, f"tags not found: {want}"
    return bytes(data)


def jpeg_with_size(width: int, height: int) -> bytes:
    data = bytearray(encode(solid("RGB", (16, 16), (0, 90, 0)), "JPEG"))
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def psd(width: int, height: int, layers: int) -> bytes:
    """A minimal 8-bit RGB Photoshop file: ``layers`` raw layers plus the merged image.

    Keep width * height even: Pillow pads each odd-sized raw layer channel by one byte."""
    head = b"8BPS" + struct.pack(">H6xHIIHH", 1, 3, height, width, 8, 3)
    records, channels = b"", b""
    for k in range(layers):
        records += struct.pack(">iiiiH", 0, 0, height, width, 3)
        records += b"".join(struct.pack(">hI", c, 2 + width * height) for c in range(3))
        records += b"8BIMnorm" + bytes([255, 0, 0, 0])
        name = bytes([2]) + f"L{k}".encode() + b"\0"  # Pascal string padded to 4
        extra = struct.pack(">II", 0, 0) + name
        records += struct.pack(">I", len(extra)) + extra
        channels += b"".join(b"\0\0" + bytes([40 * k + c]) * (width * height) for c in range(3))
    section = b""
    if layers:
        info = struct.pack(">h", layers) + records + channels
        info += b"\0" * (len(info) % 2)
        section = struct.pack(">I", len(info)) + info + struct.pack(">I", 0)
    merged = b"\0\0" + b"".join(bytes([v]) * (width * height) for v in (10, 200, 30))
    return head + struct.pack(">II", 0, 0) + struct.pack(">I", len(section)) + section + merged


def animated(fmt: str) -> bytes:
    frames = [solid("RGB", (30, 20), c) for c in [(255, 0, 0), (0, 255, 0), (0, 0, 255)]]
    return encode(frames[0], fmt, save_all=True, append_images=frames[1:], duration=100,
                  lossless=True)


def with_orientation(im: Image.Image, fmt: str, orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return encode(im, fmt, exif=exif)


def palette_with_transparency(fmt: str) -> bytes:
    pal = solid("P", (6, 4), 1)
    pal.putpalette([0, 0, 0, 200, 0, 0] + [0] * 762)
    pal.paste(0, (0, 0, 6, 2))  # top half index 0, transparent
    return encode(pal, fmt, transparency=0)


def ramp(dtype: str, hi: float) -> np.ndarray:
    return np.tile(np.linspace(0, hi, 16).astype(dtype), (4, 1))


def float_with_nan() -> bytes:
    arr = ramp("float32", 1.0)
    arr[0, 0], arr[0, 1] = np.nan, np.inf
    return encode(Image.fromarray(arr), "TIFF")


def random_bytes() -> bytes:
    return np.random.default_rng(7).bytes(3000)


def truncated(fmt: str) -> bytes:
    rng = np.random.default_rng(3)
    data = encode(Image.fromarray(rng.integers(0, 256, (64, 96, 3), dtype=np.uint8)), fmt)
    return data[: len(data) // 2]


# --------------------------------------------------------------------------- the cases

# id -> (bytes factory, expected): (width, height) displayed, or (kind, words the message has)
Expected = tuple[int, int] | tuple[str, tuple[str, ...]]
CASES: dict[str, tuple[Callable[[], bytes], Expected]] = {
    # tiny images, every common format
    **{f"tiny-{w}x{h}-{fmt}": (lambda w=w, h=h, fmt=fmt: encode(
        solid("RGB", (w, h), (200, 30, 30)), fmt), (w, h))
       for w, h in [(1, 1), (1, 9), (9, 1), (2, 2)]
       for fmt in ["PNG", "JPEG", "GIF", "BMP", "WEBP", "TIFF"]},
    "tiny-1x2-jpeg-rotated": (lambda: with_orientation(solid("RGB", (1, 2), 9), "JPEG", 6),
                              (2, 1)),
    # bit depths and pixel modes
    "png-I;16": (lambda: encode(Image.fromarray(ramp("<u2", 65535)), "PNG"), (16, 4)),
    "tiff-I;16B": (lambda: encode(Image.fromarray(ramp(">u2", 65535)), "TIFF"), (16, 4)),
    "tiff-I32": (lambda: encode(Image.fromarray(ramp("int32", 1e6)), "TIFF"), (16, 4)),
    "tiff-F": (lambda: encode(Image.fromarray(ramp("float32", 1.0)), "TIFF"), (16, 4)),
    "tiff-F-nan-inf": (float_with_nan, (16, 4)),
    "png-1bit": (lambda: encode(solid("1", (13, 5), 1), "PNG"), (13, 5)),
    "bmp-1bit": (lambda: encode(solid("1", (13, 5), 1), "BMP"), (13, 5)),
    "tiff-1bit-group4": (lambda: encode(solid("1", (13, 5), 1), "TIFF", compression="group4"),
                         (13, 5)),
    "png-LA": (lambda: encode(solid("LA", (7, 3), (90, 128)), "PNG"), (7, 3)),
    "tiff-LA": (lambda: encode(solid("LA", (7, 3), (90, 128)), "TIFF"), (7, 3)),
    "tiff-PA": (lambda: encode(solid("PA", (7, 3), (0, 128)), "TIFF"), (7, 3)),
    "webp-RGBA": (lambda: encode(solid("RGBA", (7, 3), (0, 0, 255, 100)), "WEBP"), (7, 3)),
    "jpeg-CMYK": (lambda: encode(solid("CMYK", (7, 3), (0, 255, 255, 0)), "JPEG"), (7, 3)),
    "tiff-CMYK": (lambda: encode(solid("CMYK", (7, 3), (0, 255, 255, 0)), "TIFF"), (7, 3)),
    "tiff-LAB": (lambda: encode(solid("LAB", (7, 3), (128, 128, 128)), "TIFF"), (7, 3)),
    "png-P-transparency": (lambda: palette_with_transparency("PNG"), (6, 4)),
    "gif-P-transparency": (lambda: palette_with_transparency("GIF"), (6, 4)),
    # several frames or sizes
    "gif-animated": (lambda: animated("GIF"), (30, 20)),
    "webp-animated": (lambda: animated("WEBP"), (30, 20)),
    "png-animated": (lambda: animated("PNG"), (30, 20)),
    "ico-3-sizes": (lambda: encode(solid("RGBA", (64, 64), (255, 0, 0, 255)), "ICO",
                                   sizes=[(16, 16), (32, 32), (64, 64)]), (64, 64)),
    "psd-no-layers": (lambda: psd(4, 3, 0), (4, 3)),
    "psd-1-layer": (lambda: psd(4, 3, 1), (4, 3)),
    "psd-3-layers": (lambda: psd(4, 3, 3), (4, 3)),
    "gif-zero-screen-valid-frame": (lambda: gif(screen=(0, 0)), (10, 10)),
    # variants Pillow cannot decode: unsupported, with Pillow's reason
    "bmp-bitfields-4444": (lambda: bmp(4, 4, 16, 3, pixels=bytes(32),
                                       masks=(0xF000, 0x0F00, 0x00F0)),
                           ("unsupported", ("BMP", "bitfields"))),
    "bmp-2bit-palette": (lambda: bmp(4, 4, 2, palette=4, pixels=bytes(16)),
                         ("unsupported", ("BMP", "depth (2)"))),
    "bmp-embedded-jpeg": (lambda: bmp(8, 8, 0, 4, pixels=encode(solid("RGB", (8, 8), 0), "JPEG")),
                          ("unsupported", ("BMP", "compression 4", "JPEG"))),
    "bmp-embedded-png": (lambda: bmp(8, 8, 0, 5, pixels=encode(solid("RGB", (8, 8), 0), "PNG")),
                         ("unsupported", ("BMP", "compression 5", "PNG"))),
    "tiff-jpeg2000-compression": (lambda: tiff_with_tags(compression=34712),
                                  ("unsupported", ("TIFF", "34712", "JPEG 2000"))),
    "tiff-garbage-compression": (lambda: tiff_with_tags(compression=60001),
                                 ("corrupt", ("TIFF", "60001"))),
    "tiff-logluv-layout": (lambda: tiff_with_tags(photometric=32844),
                           ("unsupported", ("TIFF pixel layout", "32844"))),
    "tiff-garbage-photometric": (lambda: tiff_with_tags(photometric=777),
                                 ("corrupt", ("TIFF", "777"))),
    "bmp-garbage-depth": (lambda: bmp(4, 4, 72, pixels=bytes(64)), ("corrupt", ("72 bits",))),
    "bmp-garbage-compression": (lambda: bmp(4, 4, 24, 99, pixels=bytes(64)),
                                ("corrupt", ("compression 99",))),
    # impossible sizes: corrupt, saying so
    "gif-zero-width": (lambda: gif(screen=(0, 10), frame=(0, 10)), ("corrupt", ("0x10",))),
    "gif-zero-height": (lambda: gif(screen=(10, 0), frame=(10, 0)), ("corrupt", ("10x0",))),
    "gif-zero-width-frame": (lambda: gif(frame=(0, 10)), ("corrupt", ("0x10",))),
    "png-zero-width": (lambda: png_with_size(0, 10), ("corrupt", ("0x10",))),
    "bmp-zero-height": (lambda: bmp(4, 0, 24), ("corrupt", ("4x0",))),
    "jpeg-zero-width": (lambda: jpeg_with_size(0, 16), ("corrupt", ("0x16",))),
    "jpeg-height-from-dnl": (lambda: jpeg_with_size(16, 0), ("unsupported", ("DNL",))),
    "tiff-zero-width": (lambda: tiff_with_tags(width=0), ("corrupt", ("0x8",))),
    # huge headers in tiny files: refused before any pixel is allocated
    "png-bomb": (lambda: png_with_size(40_000, 40_000), ("bomb", ("max_pixels",))),
    "gif-bomb": (lambda: gif(screen=(65_535, 65_535), frame=(65_535, 65_535)), ("bomb", ())),
    "gif-frame-bomb": (lambda: gif(frame=(30_000, 30_000)), ("bomb", ())),
    "bmp-bomb": (lambda: bmp(60_000, 60_000, 24), ("bomb", ("max_pixels",))),
    "jpeg-bomb": (lambda: jpeg_with_size(65_000, 65_000), ("bomb", ("max_pixels",))),
    "tiff-bomb": (lambda: tiff_with_tags(width=1 << 20, height=1 << 20), ("bomb", ())),
    # damaged or not images at all
    "jpeg-truncated": (lambda: truncated("JPEG"), ("truncated", ())),
    "png-truncated": (lambda: truncated("PNG"), ("truncated", ())),
    "empty": (lambda: b"", ("empty", ())),
    "random-bytes": (random_bytes, ("not_image", ())),
    "text": (lambda: b"name,width\nphoto,3\n" * 20, ("not_image", ("text",))),
}


@pytest.mark.parametrize("case", list(CASES))
def test_odd_file_decodes_or_fails_with_the_right_kind(case: str) -> None:
    factory, expected = CASES[case]
    data = factory()
    if isinstance(expected[0], int):
        img = decode_image(data, name=NAME)
        assert img.rgb.dtype == np.uint8 and img.rgb.ndim == 3 and img.rgb.shape[2] == 3
        assert (img.width, img.height) == expected
        assert img.rgb.shape[:2] == (img.height, img.width)
        assert img.n_frames >= 1
        assert read_image_size(data, name=NAME) == expected
        small = decode_image(data, name=NAME, max_side=1)
        assert small.rgb.shape == (1, 1, 3)
        return
    kind, words = expected
    with pytest.raises(DecodeError) as info:
        decode_image(data, name=NAME)
    message = str(info.value)
    assert info.value.kind == kind, message
    assert NAME in message and "\n" not in message
    for word in words:
        assert word in message, message
    try:  # the header alone may be fine; if not, the same contract holds
        read_image_size(data, name=NAME)
    except DecodeError as exc:
        assert exc.kind in ERROR_KINDS and NAME in str(exc)


@pytest.mark.parametrize("case", [c for c in CASES if isinstance(CASES[c][1][0], int)])
def test_features_of_every_decodable_odd_file_are_finite(case: str) -> None:
    row = compute_features(CASES[case][0](), name=NAME)
    for key, value in row.items():
        if isinstance(value, float):
            assert math.isfinite(value), (key, value)
    assert 0 <= row["brightness"] <= 1 and 0 <= row["edge_density"] <= 1
    assert isinstance(row["is_grayscale"], bool)


def test_first_frame_colours() -> None:
    """Animation, PSD composite and palette transparency: the picture a viewer shows first."""
    for fmt in ("GIF", "WEBP", "PNG"):
        img = decode_image(animated(fmt), name=f"anim.{fmt.lower()}")
        assert img.n_frames == 3
        r, g, b = img.rgb[10, 15].astype(int)
        assert r > 240 and g < 15 and b < 15, fmt
    layered = decode_image(psd(4, 3, 3), name="layers.psd")
    assert layered.format == "PSD" and layered.n_frames == 3
    assert tuple(layered.rgb[1, 2]) == (10, 200, 30)  # the merged image, not a layer
    assert decode_image(psd(4, 3, 0)).n_frames == 1
    for fmt in ("PNG", "GIF"):
        img = decode_image(palette_with_transparency(fmt))
        assert tuple(img.rgb[0, 0]) == (255, 255, 255) and tuple(img.rgb[3, 5]) == (200, 0, 0)
    ico = decode_image(CASES["ico-3-sizes"][0]())
    assert tuple(ico.rgb[30, 30]) == (255, 0, 0)
    cmyk = decode_image(CASES["tiff-CMYK"][0]())
    assert tuple(cmyk.rgb[1, 1]) == (255, 0, 0)


def test_tiny_images_keep_their_colour_and_features() -> None:
    for w, h in [(1, 1), (1, 9), (9, 1), (2, 2)]:
        data = encode(solid("RGB", (w, h), (200, 30, 30)), "PNG")
        img = decode_image(data, name="dot.png")
        assert img.rgb.shape == (h, w, 3) and tuple(img.rgb[0, 0]) == (200, 30, 30)
        row = compute_features(data, name="dot.png")
        assert (row["width"], row["height"]) == (w, h)
        assert row["is_grayscale"] is False and row["saturation"] > 0.8
        assert row["entropy"] == 0 and row["sharpness"] == 0 and row["edge_density"] == 0
        gray = compute_features(encode(solid("L", (w, h), 77), "PNG"), name="gray.png")
        assert gray["is_grayscale"] is True and gray["colorfulness"] == 0


def test_tiff_codec_missing_from_libtiff_is_unsupported_or_else_corrupt() -> None:
    """WebP-in-TIFF (50001) is known to Pillow, but libtiff may be built without it."""
    data = tiff_with_tags(compression=50001)  # raw pixels labelled as WebP
    with pytest.raises(DecodeError) as info:
        decode_image(data, name="scan.tif")
    message = str(info.value)
    assert "scan.tif" in message and "TIFF" in message
    assert info.value.kind in ("unsupported", "corrupt")
    if info.value.kind == "unsupported":
        assert "webp" in message.lower() and "libtiff" in message


# --------------------------------------------------------------------------- HEIC / AVIF

HAS_AVIF = "avif" in features.modules and bool(features.check_module("avif"))
NO_AVIF = pytest.mark.skipif(not HAS_AVIF, reason="this Pillow has no AVIF codec (PIL.features "
                             "'avif'; Pillow>=11.3 wheels have it)")


def heif_or_avif(fmt: str) -> bytes:
    im = Image.fromarray(np.random.default_rng(5).integers(0, 256, (64, 96, 3), dtype=np.uint8))
    buf = io.BytesIO()
    if fmt == "HEIF":
        pillow_heif.from_pillow(im).save(buf, quality=80)
    else:
        im.save(buf, "AVIF", quality=80)
    return buf.getvalue()


@pytest.mark.parametrize("fmt", ["HEIF", pytest.param("AVIF", marks=NO_AVIF)])
@pytest.mark.parametrize("keep", [0.05, 0.5, 0.95])
def test_truncated_heic_and_avif_are_truncated(fmt: str, keep: float) -> None:
    data = heif_or_avif(fmt)
    with pytest.raises(DecodeError) as info:
        decode_image(data[: int(len(data) * keep)], name=NAME)
    message = str(info.value)
    assert info.value.kind == "truncated", message
    assert NAME in message and fmt in message and "\n" not in message


@NO_AVIF
def test_avif_with_the_generic_mif1_brand_goes_to_the_avif_decoder() -> None:
    """pillow-heif also accepts "mif1" files but may have no AV1 decoder: AVIF is tried first."""
    data = heif_or_avif("AVIF")
    assert data[8:12] == b"avif"
    img = decode_image(data[:8] + b"mif1" + data[12:], name="generic.avif")
    assert img.format == "AVIF" and (img.width, img.height) == (96, 64)


def test_heic_without_pillow_heif_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    data = heif_or_avif("HEIF")
    decode_image(data)  # plugins (pillow-heif's opener included) are registered once, here
    monkeypatch.delitem(Image.OPEN, "HEIF")  # as if pillow-heif were not installed
    with pytest.raises(DecodeError) as info:
        decode_image(data, name="IMG_0003.HEIC")
    assert info.value.kind == "unsupported"
    assert "IMG_0003.HEIC" in str(info.value) and "pip install pillow-heif" in str(info.value)
