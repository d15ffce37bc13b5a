"""pHash and dHash as ``imagehash`` defines them, taken from one small thumbnail of the luma.

Why a thumbnail: ``imagehash`` shrinks its input with Pillow's LANCZOS filter, whose cost grows
with the input (about 100 taps per output pixel from a 512-px image), so hashing cost as much
as decoding a small image. Phase II (features version 2) first area-averages the working luma
to ``HASH_SIDE`` x ``HASH_SIDE`` (one cheap OpenCV pass; area averaging is a proper
anti-aliasing filter, so the thumbnail keeps exactly what a 32x32 hash can see) and hashes that
with imagehash's own steps: the result is ``imagehash.phash``/``dhash`` of the thumbnail, bit
for bit (tests compare against imagehash itself).
"""

from __future__ import annotations

import math

import cv2
import numpy as np
from PIL import Image

HASH_SIDE = 64  # the thumbnail both hashes are computed from (features version 2)
PHASH_SIDE = 32  # imagehash.phash: hash_size 8 x highfreq_factor 4
DHASH_SIZE = (9, 8)  # imagehash.dhash: (width, height) = (hash_size + 1, hash_size)


def hash_thumbnail(luma: np.ndarray) -> np.ndarray:
    """The working luma (uint8, H x W) area-averaged to HASH_SIDE x HASH_SIDE (aspect
    ignored, as imagehash ignores it)."""
    if luma.shape == (HASH_SIDE, HASH_SIDE):
        return luma
    return cv2.resize(luma, (HASH_SIDE, HASH_SIDE), interpolation=cv2.INTER_AREA)


def perceptual_hashes(luma: np.ndarray) -> tuple[str, str]:
    """(phash, dhash) hex strings of an image's luma, both from its hash thumbnail."""
    thumb = Image.fromarray(np.ascontiguousarray(hash_thumbnail(luma)))
    return _phash(thumb), _dhash(thumb)


def phash_hex(luma: np.ndarray) -> str:
    """``str(imagehash.phash(Image.fromarray(luma)))`` for a uint8 (H, W) luma array."""
    return _phash(Image.fromarray(np.ascontiguousarray(luma)))


def dhash_hex(luma: np.ndarray) -> str:
    """``str(imagehash.dhash(Image.fromarray(luma)))`` for a uint8 (H, W) luma array."""
    return _dhash(Image.fromarray(np.ascontiguousarray(luma)))


def _phash(img: Image.Image) -> str:
    from scipy.fftpack import dct

    pixels = np.asarray(img.resize((PHASH_SIDE, PHASH_SIDE), Image.Resampling.LANCZOS),
                        dtype=np.float64)
    coeffs = dct(dct(pixels, axis=0), axis=1)
    low = coeffs[:8, :8]
    return _hex(low > np.median(low))


def _dhash(img: Image.Image) -> str:
    pixels = np.asarray(img.resize(DHASH_SIZE, Image.Resampling.LANCZOS), dtype=np.int16)
    return _hex(pixels[:, 1:] > pixels[:, :-1])


def _hex(bits: np.ndarray) -> str:
    """imagehash's ``str(ImageHash)``: bits row-major, most significant first, zero-padded."""
    flat = bits.ravel()
    if flat.size % 8 == 0:
        return np.packbits(flat).tobytes().hex()
    value = int("".join("1" if b else "0" for b in flat), 2)
    return f"{value:0{math.ceil(flat.size / 4)}x}"
