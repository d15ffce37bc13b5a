"""pHash and dHash of a luma image, bit-identical to ``imagehash`` and several times cheaper.

Why: ``imagehash.phash``/``dhash`` shrink the 512-px working image with Pillow's LANCZOS resize,
a scalar C loop over ~100 source pixels per output pixel that cost as much as decoding the image.
Pillow's resize is two separable fixed-point passes, so each pass is a matrix product with
Pillow's own integer coefficients; done in float64 (exact for these integer sums) with Pillow's
rounding, clipping and pass order, the result is the bytes Pillow produces, so the hashes stay
comparable with rows written by earlier versions (tests compare against ``imagehash`` itself).
"""

from __future__ import annotations

import math
from functools import lru_cache

import cv2
import numpy as np

# Pillow's libImaging/Resample.c (13.x): LANCZOS support and the 8-bit fixed-point precision.
_LANCZOS_SUPPORT = 3.0
_PRECISION_BITS = 32 - 8 - 2
_HALF = float(1 << (_PRECISION_BITS - 1))
_SCALE = float(1 << _PRECISION_BITS)

PHASH_SIDE = 32  # imagehash.phash: hash_size 8 x highfreq_factor 4
DHASH_SIZE = (9, 8)  # imagehash.dhash: (width, height) = (hash_size + 1, hash_size)


def _sinc(x: float) -> float:
    if x == 0.0:
        return 1.0
    x *= math.pi
    return math.sin(x) / x


def _lanczos(x: float) -> float:
    return _sinc(x) * _sinc(x / 3.0) if -3.0 <= x < 3.0 else 0.0


@lru_cache(maxsize=1024)
def _weights(in_size: int, out_size: int) -> tuple[np.ndarray, int, int]:
    """Pillow's LANCZOS coefficients for one axis as an (in, out) float64 matrix of their
    integer fixed-point values, plus the first and one-past-last input index any output uses."""
    scale = in_size / out_size
    filterscale = max(scale, 1.0)
    support = _LANCZOS_SUPPORT * filterscale
    inv = 1.0 / filterscale
    matrix = np.zeros((in_size, out_size), dtype=np.float64)
    first, last = in_size, 0
    for xx in range(out_size):
        center = (xx + 0.5) * scale
        xmin = max(int(center - support + 0.5), 0)  # C's (int) cast truncates toward zero
        xmax = min(int(center + support + 0.5), in_size) - xmin
        ws = [_lanczos((x + xmin - center + 0.5) * inv) for x in range(xmax)]
        total = sum(ws)  # left to right in double, as Pillow does
        for x, w in enumerate(ws):
            k = w / total if total != 0.0 else w
            # normalize_coeffs_8bpc: add or subtract 0.5, then truncate toward zero.
            matrix[x + xmin, xx] = int(k * _SCALE - 0.5) if k < 0 else int(k * _SCALE + 0.5)
        first, last = min(first, xmin), max(last, xmin + xmax)
    matrix.flags.writeable = False
    return matrix, first, last


def _fixed_point(sums: np.ndarray) -> np.ndarray:
    """Pillow's clip8: (sum + half) >> PRECISION_BITS, clipped to 0..255."""
    return np.clip(np.floor((sums + _HALF) / _SCALE), 0, 255)


def _matmul(a: np.ndarray, b: np.ndarray, *, transpose_a: bool = False) -> np.ndarray:
    """float64 product through OpenCV, which the caller keeps on one thread: numpy's BLAS would
    start a thread per core for every small product and oversubscribe the Ray workers' CPUs."""
    return cv2.gemm(a, b, 1.0, None, 0.0, flags=cv2.GEMM_1_T if transpose_a else 0)


def lanczos_resize(luma: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``Image.fromarray(luma).resize(size, Image.LANCZOS)`` for a uint8 (H, W) array, as uint8."""
    out_w, out_h = size
    in_h, in_w = luma.shape
    need_h, need_v = in_w != out_w, in_h != out_h
    # Pillow runs the vertical pass first when the height shrinks more than twice the width.
    vertical_first = in_h - out_h > 0 and in_h - out_h > (in_w - out_w) * 2
    pixels = luma.astype(np.float64)  # sums of uint8 x 22-bit integers: exact in float64
    if need_h and not vertical_first:
        rows = slice(None)
        if need_v:  # only the rows the vertical pass will read
            _, y0, y1 = _weights(in_h, out_h)
            rows = slice(y0, y1)
        pixels = _fixed_point(_matmul(np.ascontiguousarray(pixels[rows]), _weights(in_w, out_w)[0]))
        if need_v:
            vert, y0, y1 = _weights(in_h, out_h)
            pixels = _fixed_point(_matmul(vert[y0:y1], pixels, transpose_a=True))
    else:
        if need_v:
            pixels = _fixed_point(_matmul(_weights(in_h, out_h)[0], pixels, transpose_a=True))
        if need_h:
            pixels = _fixed_point(_matmul(pixels, _weights(in_w, out_w)[0]))
    return pixels.astype(np.uint8)


def phash_hex(luma: np.ndarray) -> str:
    """``str(imagehash.phash(img))`` where ``luma`` is ``np.asarray(img.convert("L"))``."""
    from scipy.fftpack import dct

    pixels = lanczos_resize(luma, (PHASH_SIDE, PHASH_SIDE))
    coeffs = dct(dct(pixels, axis=0), axis=1)
    low = coeffs[:8, :8]
    return _hex(low > np.median(low))


def dhash_hex(luma: np.ndarray) -> str:
    """``str(imagehash.dhash(img))`` where ``luma`` is ``np.asarray(img.convert("L"))``."""
    pixels = lanczos_resize(luma, DHASH_SIZE)
    return _hex(pixels[:, 1:] > pixels[:, :-1])


def _hex(bits: np.ndarray) -> str:
    """imagehash's ``str(ImageHash)``: bits row-major, most significant first, zero-padded."""
    flat = bits.ravel()
    if flat.size % 8 == 0:
        return np.packbits(flat).tobytes().hex()
    value = int("".join("1" if b else "0" for b in flat), 2)
    return f"{value:0{math.ceil(flat.size / 4)}x}"
