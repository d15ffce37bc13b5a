"""decode_image / read_image_size: what a user would notice about good, odd and bad files."""

from __future__ import annotations

import io
import json
import pickle
import subprocess
import sys
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pillow_heif
import pytest
from PIL import Image, features

from exoray.image.decode import (
    DEFAULT_MAX_PIXELS,
    DecodedImage,
    DecodeError,
    decode_image,
    read_image_size,
)


def encode(im: Image.Image, fmt: str, **kw: object) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    return buf.getvalue()


def photo(w: int = 360, h: int = 240, seed: int = 0) -> np.ndarray:
    """Smooth colour gradients plus mild noise: compresses like a photo."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    rgb = np.stack([255 * xx / w, 255 * yy / h, 128 + 100 * np.sin(xx / 23 + yy / 31)], -1)
    rgb += rng.normal(0, 6, rgb.shape)
    return np.clip(rgb, 0, 255).astype(np.uint8)


def png_header_only(width: int, height: int) -> bytes:
    """A ~70-byte PNG whose header declares width x height (nothing after a few rows)."""

    def chunk(tag: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(tag + body) & 0xFFFFFFFF
        return len(body).to_bytes(4, "big") + tag + body + crc.to_bytes(4, "big")

    ihdr = width.to_bytes(4, "big") + height.to_bytes(4, "big") + bytes([1, 0, 0, 0, 0])
    idat = zlib.compress(bytes(1 + width // 8), 9)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


# --------------------------------------------------------------------------- good files


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "GIF", "TIFF", "BMP"])
def test_common_formats_decode_to_rgb_uint8(fmt: str) -> None:
    data = encode(Image.fromarray(photo()), fmt)
    img = decode_image(data, name=f"a.{fmt.lower()}")
    assert isinstance(img, DecodedImage)
    assert img.rgb.shape == (240, 360, 3)
    assert img.rgb.dtype == np.uint8
    assert img.rgb.flags.c_contiguous and img.rgb.flags.writeable
    assert (img.width, img.height) == (360, 240)
    assert img.format == fmt
    assert img.n_frames == 1
    assert read_image_size(data) == (360, 240)


def test_lossless_decode_is_exact() -> None:
    arr = photo()
    assert np.array_equal(decode_image(encode(Image.fromarray(arr), "PNG")).rgb, arr)


def test_cmyk_red_stays_red() -> None:
    data = encode(Image.new("CMYK", (40, 30), (0, 255, 255, 0)), "JPEG", quality=95)
    img = decode_image(data)
    assert img.mode == "CMYK"
    r, g, b = img.rgb[15, 20].astype(int)
    assert r > 240 and g < 15 and b < 15


@pytest.mark.parametrize("dtype", ["<u2", ">u2"])
def test_16bit_gray_is_scaled_by_range_not_clipped(dtype: str) -> None:
    ramp = np.tile(np.linspace(0, 65535, 256).astype(dtype), (8, 1))
    data = encode(Image.fromarray(ramp), "TIFF" if dtype == ">u2" else "PNG")
    img = decode_image(data)
    assert img.mode.startswith("I;16")
    row = img.rgb[4, :, 0].astype(int)
    assert row.min() == 0 and row.max() == 255
    assert np.all(np.diff(row) >= 0)  # monotone: no wrap-around or clipping plateau
    assert abs(row[128] - 128) <= 2  # linear: mid grey stays mid grey
    assert np.array_equal(img.rgb[..., 0], img.rgb[..., 2])


def test_32bit_int_and_float_images() -> None:
    ramp = np.tile(np.linspace(0, 65535, 256), (4, 1))
    as_int = decode_image(encode(Image.fromarray(ramp.astype(np.int32)), "TIFF"))
    as_float = decode_image(encode(Image.fromarray((ramp / 65535).astype(np.float32)), "TIFF"))
    for img in (as_int, as_float):
        assert img.rgb.min() == 0 and img.rgb.max() == 255
        assert np.all(np.diff(img.rgb[0, :, 1].astype(int)) >= 0)


def test_transparent_pixels_become_white() -> None:
    rgba = np.zeros((20, 20, 4), np.uint8)
    rgba[..., 0] = 255  # red everywhere...
    rgba[:10, :, 3] = 255  # ...opaque in the top half, transparent below
    rgba[10:, :10, 3] = 128  # and half transparent bottom-left
    img = decode_image(encode(Image.fromarray(rgba, "RGBA"), "PNG"))
    assert img.mode == "RGBA"
    assert tuple(img.rgb[0, 0]) == (255, 0, 0)
    assert tuple(img.rgb[19, 19]) == (255, 255, 255)
    assert tuple(img.rgb[19, 0]) == (255, 127, 127)  # 50 % red over white


def test_la_and_palette_transparency_become_white() -> None:
    la = np.zeros((10, 10, 2), np.uint8)  # black...
    la[:5, :, 1] = 255  # ...opaque at the top only
    img = decode_image(encode(Image.fromarray(la, "LA"), "PNG"))
    assert tuple(img.rgb[0, 0]) == (0, 0, 0) and tuple(img.rgb[9, 9]) == (255, 255, 255)

    pal = Image.new("P", (10, 10), 1)
    pal.putpalette([0, 0, 0, 0, 0, 255] + [0] * 762)  # index 0 black, index 1 blue
    pal.paste(0, (0, 0, 10, 5))
    img = decode_image(encode(pal, "PNG", transparency=0))
    assert img.mode == "P"
    assert tuple(img.rgb[0, 0]) == (255, 255, 255)  # transparent index -> white, not black
    assert tuple(img.rgb[9, 9]) == (0, 0, 255)


def test_palette_without_transparency_and_bilevel() -> None:
    pal = Image.fromarray(photo(64, 48)).quantize(16)
    img = decode_image(encode(pal, "PNG"))
    assert img.mode == "P"
    assert np.abs(img.rgb.astype(int) - np.array(pal.convert("RGB")).astype(int)).max() == 0
    bw = Image.new("1", (16, 8), 0)
    bw.paste(1, (8, 0, 16, 8))
    img = decode_image(encode(bw, "PNG"))
    assert img.mode == "1"
    assert tuple(img.rgb[0, 0]) == (0, 0, 0) and tuple(img.rgb[0, 15]) == (255, 255, 255)


@pytest.mark.parametrize("fmt", ["GIF", "WEBP"])
def test_animation_gives_first_frame_and_frame_count(fmt: str) -> None:
    colours = [(255, 0, 0), (0, 255, 0), (0, 0, 255)]
    frames = [Image.new("RGB", (30, 20), c) for c in colours]
    buf = io.BytesIO()
    frames[0].save(buf, fmt, save_all=True, append_images=frames[1:], duration=100, lossless=True)
    img = decode_image(buf.getvalue(), name=f"anim.{fmt.lower()}")
    assert img.n_frames == 3
    r, g, b = img.rgb[10, 15].astype(int)
    assert r > 240 and g < 15 and b < 15


# Where the red top-left marker of the *stored* pixels ends up once displayed, per orientation.
_MARKER_CORNER = {
    1: "top_left",
    2: "top_right",
    3: "bottom_right",
    4: "bottom_left",
    5: "top_left",
    6: "top_right",
    7: "bottom_right",
    8: "bottom_left",
}


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_is_applied(orientation: int) -> None:
    stored = np.full((40, 80, 3), 40, np.uint8)  # 80 wide, 40 tall as stored
    stored[:8, :8] = (255, 0, 0)
    exif = Image.Exif()
    exif[0x0112] = orientation
    data = encode(Image.fromarray(stored), "JPEG", quality=95, exif=exif)
    img = decode_image(data, name="rotated.jpg")
    swapped = orientation >= 5
    assert (img.width, img.height) == ((40, 80) if swapped else (80, 40))
    assert img.rgb.shape[:2] == (img.height, img.width)
    assert read_image_size(data) == (img.width, img.height)
    red = np.argwhere((img.rgb[..., 0] > 200) & (img.rgb[..., 1] < 80))
    cy, cx = red.mean(axis=0)
    corner = ("top" if cy < img.height / 2 else "bottom") + (
        "_left" if cx < img.width / 2 else "_right"
    )
    assert corner == _MARKER_CORNER[orientation]


def test_exif_orientation_in_png() -> None:
    exif = Image.Exif()
    exif[0x0112] = 6
    data = encode(Image.fromarray(photo(60, 30)), "PNG", exif=exif)
    img = decode_image(data)
    assert (img.width, img.height) == (30, 60) and img.rgb.shape == (60, 30, 3)


# --------------------------------------------------------------------------- reduced size


def test_max_side_draft_matches_full_decode_plus_resize() -> None:
    arr = photo(1600, 1000)
    data = encode(Image.fromarray(arr), "JPEG", quality=90)
    fast = decode_image(data, max_side=300)
    assert fast.rgb.shape == (188, 300, 3)
    assert (fast.width, fast.height) == (1600, 1000)  # full size is still reported
    full = decode_image(data).rgb
    reference = np.asarray(Image.fromarray(full).resize((300, 188), Image.Resampling.LANCZOS))
    diff = np.abs(fast.rgb.astype(int) - reference.astype(int))
    assert diff.mean() < 2.0
    assert np.percentile(diff, 99) < 12


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP"])
def test_max_side_bounds_long_side_and_never_upscales(fmt: str) -> None:
    data = encode(Image.fromarray(photo(500, 170)), fmt)
    assert decode_image(data, max_side=100).rgb.shape == (34, 100, 3)
    assert decode_image(data, max_side=5000).rgb.shape == (170, 500, 3)
    exif = Image.Exif()
    exif[0x0112] = 8
    rotated = encode(Image.fromarray(photo(500, 170)), "JPEG", exif=exif)
    img = decode_image(rotated, max_side=100)
    assert img.rgb.shape == (100, 34, 3) and (img.width, img.height) == (170, 500)


# --------------------------------------------------------------------------- HEIC / AVIF

HAS_AVIF = "avif" in features.modules and bool(features.check_module("avif"))
HEIF_AND_AVIF = [
    "HEIF",
    pytest.param("AVIF", marks=pytest.mark.skipif(
        not HAS_AVIF, reason="this Pillow has no AVIF codec (PIL.features 'avif'; Pillow>=11.3 "
        "wheels have it) and pillow-heif>=1.0 no longer writes AVIF")),
]


def encode_heif(im: Image.Image, fmt: str, **kw: object) -> bytes:
    """A real HEIC (pillow-heif's HEVC encoder) or AVIF (Pillow's own codec) file's bytes."""
    buf = io.BytesIO()
    if fmt == "HEIF":
        pillow_heif.from_pillow(im).save(buf, **kw)
    else:
        im.save(buf, "AVIF", **kw)
    return buf.getvalue()


def halves(w: int, h: int) -> np.ndarray:
    """Left half orange-red, right half blue: colour and left/right both checkable."""
    arr = np.empty((h, w, 3), np.uint8)
    arr[:, : w // 2] = (220, 60, 20)
    arr[:, w // 2 :] = (20, 60, 220)
    return arr


@pytest.mark.parametrize("fmt", HEIF_AND_AVIF)
def test_heic_and_avif_decode_like_any_image(fmt: str) -> None:
    data = encode_heif(Image.fromarray(halves(96, 64)), fmt, quality=90)
    img = decode_image(data, name=f"IMG_0001.{fmt.lower()}")
    assert img.format == fmt and img.n_frames == 1
    assert (img.width, img.height) == (96, 64) and img.rgb.shape == (64, 96, 3)
    assert img.rgb.dtype == np.uint8 and img.rgb.flags.c_contiguous
    left, right = img.rgb[16:48, 8:40].reshape(-1, 3), img.rgb[16:48, 56:88].reshape(-1, 3)
    assert np.abs(left.mean(0) - (220, 60, 20)).max() < 12  # lossy, 4:2:0 chroma
    assert np.abs(right.mean(0) - (20, 60, 220)).max() < 12
    assert read_image_size(data) == (96, 64)
    small = decode_image(data, max_side=48)
    assert small.rgb.shape == (32, 48, 3) and (small.width, small.height) == (96, 64)


@pytest.mark.parametrize("fmt", HEIF_AND_AVIF)
@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_heic_and_avif_exif_orientation_is_applied(fmt: str, orientation: int) -> None:
    stored = np.full((40, 80, 3), 40, np.uint8)  # 80 wide, 40 tall as stored
    stored[:8, :8] = (255, 0, 0)
    exif = Image.Exif()
    exif[0x0112] = orientation
    data = encode_heif(Image.fromarray(stored), fmt, quality=95, exif=exif.tobytes())
    img = decode_image(data, name=f"rotated.{fmt.lower()}")
    assert (img.width, img.height) == ((40, 80) if orientation >= 5 else (80, 40))
    assert img.rgb.shape[:2] == (img.height, img.width)
    assert read_image_size(data) == (img.width, img.height)
    red = np.argwhere((img.rgb[..., 0] > 200) & (img.rgb[..., 1] < 80))
    cy, cx = red.mean(axis=0)
    corner = ("top" if cy < img.height / 2 else "bottom") + (
        "_left" if cx < img.width / 2 else "_right"
    )
    assert corner == _MARKER_CORNER[orientation]


def test_heic_file_decodes_in_a_fresh_process(tmp_path: Path) -> None:
    """A Phase II worker has never registered pillow-heif itself: decode must do it."""
    path = tmp_path / "IMG_0002.HEIC"
    pillow_heif.from_pillow(Image.fromarray(halves(96, 64))).save(path, quality=90)
    script = (
        "import json, sys\n"
        "from exoray.image.decode import decode_image, read_image_size\n"
        "data = open(sys.argv[1], 'rb').read()\n"
        "size = read_image_size(data, name=sys.argv[1])\n"
        "img = decode_image(data, name=sys.argv[1])\n"
        "print(json.dumps([img.format, size, img.rgb.shape, img.rgb[32, 20].tolist()]))\n"
    )
    out = subprocess.run([sys.executable, "-c", script, str(path)], capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    fmt, size, shape, pixel = json.loads(out.stdout)
    assert (fmt, size, shape) == ("HEIF", [96, 64], [64, 96, 3])
    assert np.abs(np.array(pixel) - (220, 60, 20)).max() < 20


# --------------------------------------------------------------------------- bad files


def assert_decode_error(data: bytes, kind: str, name: str = "holiday/bad file.jpg") -> None:
    with pytest.raises(DecodeError) as info:
        decode_image(data, name=name)
    assert info.value.kind == kind, str(info.value)
    assert name in str(info.value)


def test_empty_bytes() -> None:
    assert_decode_error(b"", "empty")
    with pytest.raises(DecodeError, match="empty"):
        read_image_size(b"", name="x.jpg")


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "GIF", "TIFF"])
@pytest.mark.parametrize("keep", [0.3, 0.9])
def test_truncated_files_are_errors_not_grey_images(fmt: str, keep: float) -> None:
    data = encode(Image.fromarray(photo()), fmt)
    assert_decode_error(data[: int(len(data) * keep)], "truncated")


def test_truncated_progressive_jpeg() -> None:
    data = encode(Image.fromarray(photo()), "JPEG", progressive=True)
    assert_decode_error(data[: len(data) // 2], "truncated")


def test_random_bytes_and_text_are_not_images() -> None:
    rng = np.random.default_rng(1)
    for _ in range(200):
        assert_decode_error(rng.bytes(int(rng.integers(1, 4000))), "not_image")
    assert_decode_error(b"<!DOCTYPE html><html>not a photo</html>\n", "not_image", "page.png")
    assert_decode_error(b"just some notes\n" * 40, "not_image", "notes.png")
    with pytest.raises(DecodeError) as info:
        read_image_size(b"hello", name="hello.png")
    assert info.value.kind == "not_image"


def test_decompression_bomb_is_refused_from_the_header() -> None:
    data = png_header_only(30_000, 30_000)
    assert len(data) < 1000
    assert_decode_error(data, "bomb", "bomb.png")
    with pytest.raises(DecodeError, match="max_pixels"):
        decode_image(data, name="bomb.png")
    assert read_image_size(data) == (30_000, 30_000)  # the header is readable, that is all


def test_max_pixels_is_per_call() -> None:
    data = encode(Image.fromarray(photo(100, 50)), "PNG")
    with pytest.raises(DecodeError) as info:
        decode_image(data, name="big.png", max_pixels=4999)
    assert info.value.kind == "bomb" and "raise --max-pixels" in str(info.value)
    assert decode_image(data, max_pixels=5000).rgb.shape == (50, 100, 3)


def test_pillow_global_bomb_limit_is_not_used(monkeypatch: pytest.MonkeyPatch) -> None:
    # Pillow's own check warns above Image.MAX_IMAGE_PIXELS (an error in this test suite) and
    # raises above twice that; decode_image applies only its own max_pixels.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    data = encode(Image.fromarray(photo(100, 50)), "PNG")
    assert decode_image(data).rgb.shape == (50, 100, 3)
    assert decode_image(encode(Image.fromarray(photo(100, 50)), "JPEG"), max_side=20).width == 100
    assert DEFAULT_MAX_PIXELS == 100_000_000


def test_corrupt_data_inside_a_valid_container() -> None:
    data = bytearray(encode(Image.fromarray(photo()), "PNG", compress_level=1))
    data[len(data) // 2 : len(data) // 2 + 64] = bytes(64)  # breaks the IDAT CRC/zlib stream
    with pytest.raises(DecodeError) as info:
        decode_image(bytes(data), name="damaged.png")
    assert info.value.kind in ("corrupt", "truncated")
    assert "damaged.png" in str(info.value)


def test_decode_error_survives_pickling() -> None:
    err = DecodeError("truncated", "a/b.jpg", "ends early")
    copy = pickle.loads(pickle.dumps(err))
    assert (copy.kind, copy.name, str(copy)) == (err.kind, err.name, str(err))


def test_wrong_arguments_are_caller_errors() -> None:
    with pytest.raises(TypeError, match="binary mode"):
        decode_image("photo.jpg")  # type: ignore[arg-type]
    data = encode(Image.fromarray(photo(20, 10)), "PNG")
    with pytest.raises(ValueError, match="max_side"):
        decode_image(data, max_side=0)
    with pytest.raises(ValueError, match="max_pixels"):
        decode_image(data, max_pixels=0)
    with pytest.raises(ValueError, match="kind"):
        DecodeError("weird", "x", "y")


def test_concurrent_decoding_gives_identical_results() -> None:
    blobs = [encode(Image.fromarray(photo(300, 200, seed=s)), "JPEG") for s in range(6)]
    expected = [decode_image(b, max_side=128).rgb for b in blobs]
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda b: decode_image(b, max_side=128).rgb, blobs * 4))
    for k, rgb in enumerate(results):
        assert np.array_equal(rgb, expected[k % len(blobs)])


def test_running_out_of_memory_is_a_transient_error_retried_next_run():
    from exoray.engine.schemas import TRANSIENT_ERRORS
    from exoray.engine.stages.reading import ItemError, apply_decoder

    def starved(data: bytes, name: str):
        raise MemoryError

    got = apply_decoder(b"\xff\xd8 any bytes", "big/photo.jpg", starved)
    assert isinstance(got, ItemError) and got.error in TRANSIENT_ERRORS
    assert "big/photo.jpg" in got.message and "retried" in got.message


@pytest.mark.parametrize("variant", ["lossy", "lossless", "alpha", "alpha-lossless", "exif-6"])
def test_still_webp_decodes_to_pillows_exact_pixels(variant: str) -> None:
    """Still WebPs take OpenCV's libwebp (no animation decoder): the pixels must be Pillow's."""
    rgb = photo(301, 203, seed=5)
    if variant.startswith("alpha"):
        alpha = np.tile(np.linspace(0, 255, 301, dtype=np.uint8), (203, 1))[..., None]
        im = Image.fromarray(np.concatenate([rgb, alpha], axis=2), "RGBA")
    else:
        im = Image.fromarray(rgb)
    kw: dict[str, object] = {"lossless": variant.endswith("lossless"), "quality": 80}
    if variant == "exif-6":
        exif = Image.Exif()
        exif[0x0112] = 6
        kw["exif"] = exif.tobytes()
    data = encode(im, "WEBP", **kw)
    pil = Image.open(io.BytesIO(data))
    want = np.asarray(pil.convert("RGBA" if pil.mode == "RGBA" else "RGB"))
    if want.shape[2] == 4:  # alpha over white, as decode_image defines it
        a = want[..., 3:4].astype(np.uint16)
        want = ((want[..., :3] * a + 255 * (255 - a) + 127) // 255).astype(np.uint8)
    if variant == "exif-6":
        want = np.rot90(want, -1)
    got = decode_image(data, name=f"{variant}.webp")
    assert got.format == "WEBP" and got.mode == pil.mode
    assert np.array_equal(got.rgb, want)
    assert (got.width, got.height) == (want.shape[1], want.shape[0])
    small = decode_image(data, max_side=100)
    assert max(small.rgb.shape[:2]) == 100 and (small.width, small.height) == (got.width,
                                                                               got.height)


def test_truncated_webp_is_still_a_clear_error() -> None:
    data = encode(Image.fromarray(photo()), "WEBP", quality=80)
    with pytest.raises(DecodeError) as err:
        decode_image(data[: len(data) // 2], name="cut.webp")
    assert err.value.kind in ("truncated", "corrupt") and "cut.webp" in str(err.value)
