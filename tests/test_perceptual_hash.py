"""pHash/dHash are imagehash's own hashes of a 64-px area-averaged luma thumbnail (features v2):
bit for bit, on every shape, so near-duplicate distances mean what imagehash users expect."""

from __future__ import annotations

import cv2
import imagehash
import numpy as np
import pytest
from PIL import Image

from exoray.image.perceptual_hash import (
    HASH_SIDE,
    dhash_hex,
    hash_thumbnail,
    perceptual_hashes,
    phash_hex,
)

SHAPES = [(1, 1), (8, 9), (32, 32), (1, 512), (512, 1), (7, 100), (33, 31), (384, 512),
          (512, 384), (512, 199), (64, 64), (66, 48), (200, 700)]


def textured(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Smooth structure plus noise, like a photo's luma (pure noise hashes are degenerate)."""
    base = cv2.resize(rng.integers(0, 256, (4, 4), dtype=np.uint8), (w, h),
                      interpolation=cv2.INTER_CUBIC)
    return np.clip(base.astype(int) + rng.integers(-20, 21, (h, w)), 0, 255).astype(np.uint8)


@pytest.mark.parametrize("shape", SHAPES)
def test_hashes_are_imagehash_of_the_area_thumbnail(shape: tuple[int, int]) -> None:
    luma = textured(np.random.default_rng(sum(shape)), *shape)
    thumb = cv2.resize(luma, (HASH_SIDE, HASH_SIDE), interpolation=cv2.INTER_AREA)
    assert np.array_equal(hash_thumbnail(luma), thumb)
    img = Image.fromarray(thumb)
    assert perceptual_hashes(luma) == (str(imagehash.phash(img)), str(imagehash.dhash(img)))


def test_hex_helpers_equal_imagehash_on_any_image() -> None:
    rng = np.random.default_rng(7)
    for _ in range(40):
        h, w = (int(v) for v in rng.integers(1, 600, 2))
        luma = textured(rng, h, w)
        img = Image.fromarray(luma)
        assert phash_hex(luma) == str(imagehash.phash(img)), (h, w)
        assert dhash_hex(luma) == str(imagehash.dhash(img)), (h, w)


def test_thumbnail_hashes_agree_with_full_size_imagehash_on_real_photos() -> None:
    """Hashing the thumbnail instead of the whole image moves few bits on real photos, and a
    resized, re-encoded copy stays a near duplicate while other photos stay far apart."""
    from skimage import data

    photos = [data.astronaut(), data.chelsea(), data.coffee(), data.rocket()]
    lumas = [cv2.cvtColor(p, cv2.COLOR_RGB2GRAY) for p in photos] + [data.camera()]
    for luma in lumas:
        ours = int(perceptual_hashes(luma)[0], 16)
        full = int(str(imagehash.phash(Image.fromarray(luma))), 16)
        assert (ours ^ full).bit_count() <= 6
        small = cv2.resize(luma, (luma.shape[1] // 3, luma.shape[0] // 3),
                           interpolation=cv2.INTER_AREA)
        ok, jpeg = cv2.imencode(".jpg", small, [cv2.IMWRITE_JPEG_QUALITY, 60])
        copy = cv2.imdecode(jpeg, cv2.IMREAD_GRAYSCALE)
        assert (ours ^ int(perceptual_hashes(copy)[0], 16)).bit_count() <= 6
    hashes = [int(perceptual_hashes(luma)[0], 16) for luma in lumas]
    far = [(a ^ b).bit_count() for i, a in enumerate(hashes) for b in hashes[i + 1:]]
    assert min(far) > 16
