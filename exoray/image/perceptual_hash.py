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


def _lanczos(x: np.ndarray) -> np.ndarray:
    """Pillow's lanczos_filter (sinc(x) * sinc(x / 3) on [-3, 3)), elementwise in float64."""
    out = np.zeros_like(x)
    inside = (x >= -3.0) & (x < 3.0)
    xs = x[inside]
    with np.errstate(invalid="ignore", divide="ignore"):
        p1, p3 = xs * math.pi, (xs / 3.0) * math.pi
        s1 = np.where(xs == 0.0, 1.0, np.sin(p1) / p1)
        s3 = np.where(xs == 0.0, 1.0, np.sin(p3) / p3)
    out[inside] = s1 * s3
    return out


@lru_cache(maxsize=256)
def _weights(in_size: int, out_size: int) -> tuple[np.ndarray, int, int]:
    """Pillow's LANCZOS coefficients for one axis as an (in, out) float64 matrix of their
    integer fixed-point values, plus the first and one-past-last input index any output uses.

    Same arithmetic as Pillow's precompute_coeffs/normalize_coeffs_8bpc, vectorised: the weight
    sum runs left to right (cumsum), as Pillow's loop does.
    """
    scale = in_size / out_size
    filterscale = max(scale, 1.0)
    support = _LANCZOS_SUPPORT * filterscale
    ksize = int(math.ceil(support)) * 2 + 1
    center = (np.arange(out_size) + 0.5) * scale
    xmin = np.maximum((center - support + 0.5).astype(np.int64), 0)  # C casts truncate
    xmax = np.minimum((center + support + 0.5).astype(np.int64), in_size) - xmin
    taps = np.arange(ksize)
    used = taps[None, :] < xmax[:, None]
    w = np.where(used, _lanczos((taps[None, :] + xmin[:, None] - center[:, None] + 0.5)
                                * (1.0 / filterscale)), 0.0)
    total = np.cumsum(w, axis=1)[:, -1:]
    k = np.where(total != 0.0, w / np.where(total != 0.0, total, 1.0), w)
    fixed = np.trunc(np.where(k < 0, k * _SCALE - 0.5, k * _SCALE + 0.5))
    matrix = np.zeros((in_size, out_size), dtype=np.float64)
    rows = (xmin[:, None] + taps[None, :])[used]
    cols = np.broadcast_to(np.arange(out_size)[:, None], used.shape)[used]
    matrix[rows, cols] = fixed[used]
    matrix.flags.writeable = False
    return matrix, int(xmin.min()), int((xmin + xmax).max())


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
