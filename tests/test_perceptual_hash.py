"""The matrix-product pHash/dHash must give exactly imagehash's hashes (rows stay comparable)."""

from __future__ import annotations

import cv2
import imagehash
import numpy as np
import pytest
from PIL import Image

from exoray.image.perceptual_hash import dhash_hex, lanczos_resize, phash_hex

# Shapes around every branch: no-op, one axis only, upscaling, both pass orders (Pillow runs
# the vertical pass first when the height shrinks more than twice the width) and their border.
SHAPES = [(1, 1), (8, 9), (32, 32), (1, 512), (512, 1), (7, 100), (33, 31), (384, 512),
          (512, 384), (512, 199), (199, 512), (300, 300), (512, 240), (512, 250), (66, 48),
          (64, 48), (65, 48), (200, 700)]


def textured(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Smooth structure plus noise, like a photo's luma (pure noise hashes are degenerate)."""
    base = cv2.resize(rng.integers(0, 256, (4, 4), dtype=np.uint8), (w, h),
                      interpolation=cv2.INTER_CUBIC)
    return np.clip(base.astype(int) + rng.integers(-20, 21, (h, w)), 0, 255).astype(np.uint8)


@pytest.mark.parametrize("shape", SHAPES)
def test_resize_is_pillows_lanczos_byte_for_byte(shape: tuple[int, int]) -> None:
    rng = np.random.default_rng(sum(shape))
    luma = textured(rng, *shape)
    for size in [(32, 32), (9, 8), (5, 40), (shape[1], 8), (9, shape[0])]:
        want = np.asarray(Image.fromarray(luma).resize(size, Image.Resampling.LANCZOS))
        assert np.array_equal(lanczos_resize(luma, size), want), (shape, size)


def test_hashes_equal_imagehash_on_random_shapes() -> None:
    rng = np.random.default_rng(7)
    for _ in range(120):
        h, w = (int(v) for v in rng.integers(1, 600, 2))
        luma = textured(rng, h, w)
        img = Image.fromarray(np.stack([luma] * 3, axis=-1))
        assert phash_hex(luma) == str(imagehash.phash(img)), (h, w)
        assert dhash_hex(luma) == str(imagehash.dhash(img)), (h, w)


def test_hashes_of_a_colour_image_use_pillows_luma() -> None:
    rgb = np.random.default_rng(3).integers(0, 256, (300, 400, 3), dtype=np.uint8)
    rgb = cv2.GaussianBlur(rgb, (7, 7), 2)
    img = Image.fromarray(rgb)
    luma = np.asarray(img.convert("L"))
    assert (phash_hex(luma), dhash_hex(luma)) == (str(imagehash.phash(img)),
                                                 str(imagehash.dhash(img)))
