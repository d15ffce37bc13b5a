"""Phase II: cheap per-image features (size, colour, exposure, blur, hashes) without Ray or models.

Why these: each one answers a question a user asks of a large folder (which are dark, blurred,
grayscale, near-duplicates, exact copies?) for a few milliseconds per image, so Phase II can
run over everything before any model does. All pixel statistics are computed at a fixed working
size, so they compare across images of different resolutions.
"""

from __future__ import annotations

import hashlib
import math
import threading
from functools import lru_cache

import cv2
import numpy as np
import pyarrow as pa

from exoray.image.decode import DEFAULT_MAX_PIXELS, decode_image
from exoray.image.perceptual_hash import perceptual_hashes

WORKING_SIDE = 512
# Bumped whenever a column's definition changes; rows of an older version are recomputed by the
# next `exoray features` run, so one BASE never mixes definitions. 2: hashes from the 64-px
# luma thumbnail (were: from the 512-px working image via Pillow's luma).
FEATURES_VERSION = 2

# Canny thresholds are fixed (not derived from each image) so edge_density compares across images.
CANNY_LOW, CANNY_HIGH = 50, 150
# is_grayscale: a pixel's channel spread (max - min) above this counts as colour; JPEG chroma
# subsampling and quantisation leave a few levels of spread on truly gray images.
_GRAY_SPREAD = 24
_GRAY_MAX_COLOUR_FRACTION = 0.005
_GRAY_MAX_MEAN_SPREAD = 4.0

FEATURE_COLUMNS: list[tuple[str, pa.DataType]] = [
    ("width", pa.int32()),
    ("height", pa.int32()),
    ("mode", pa.string()),
    ("format", pa.string()),
    ("n_frames", pa.int32()),
    ("bytes", pa.int64()),
    ("aspect", pa.float32()),
    ("mean_r", pa.float32()),
    ("mean_g", pa.float32()),
    ("mean_b", pa.float32()),
    ("std_r", pa.float32()),
    ("std_g", pa.float32()),
    ("std_b", pa.float32()),
    ("brightness", pa.float32()),
    ("contrast", pa.float32()),
    ("saturation", pa.float32()),
    ("colorfulness", pa.float32()),
    ("entropy", pa.float32()),
    ("sharpness", pa.float32()),
    ("edge_density", pa.float32()),
    ("is_grayscale", pa.bool_()),
    ("content_hash", pa.string()),
    ("phash", pa.string()),
    ("dhash", pa.string()),
    ("features_version", pa.int16()),
]
FEATURE_SCHEMA = pa.schema(FEATURE_COLUMNS)

_cv2_lock = threading.Lock()
_cv2_ready = False


def _single_threaded_cv2() -> None:
    """Pin OpenCV to one thread, once: Ray already runs one worker per core, and OpenCV's own
    pool on top would oversubscribe the CPUs (notably on a 2-vCPU Colab runtime)."""
    global _cv2_ready
    if _cv2_ready:
        return
    with _cv2_lock:
        if not _cv2_ready:
            cv2.setNumThreads(1)
            _cv2_ready = True


def content_hash(data: bytes) -> str:
    """Hex blake2b-128 of the file bytes: the exact-duplicate key (fast, collision-safe)."""
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def hamming_hex(a: str, b: str) -> int:
    """Number of differing bits between two equal-length hex hashes (e.g. phash strings)."""
    if len(a) != len(b):
        raise ValueError(
            f"hashes differ in length ({len(a)} vs {len(b)} hex chars): {a!r}, {b!r}; "
            "compare hashes of the same kind and size"
        )
    try:
        return (int(a, 16) ^ int(b, 16)).bit_count()
    except ValueError as exc:
        raise ValueError(f"not a hex hash: {a!r} or {b!r}") from exc


def compute_features(
    data: bytes, *, name: str = "", max_pixels: int = DEFAULT_MAX_PIXELS
) -> dict[str, object]:
    """One Phase II row for an image file's bytes; raises DecodeError for unreadable files.

    Every statistic is the same definition as before at the 512-px working size, computed in
    as few passes as possible: the channels are split once, per-channel means/stds and the
    colourfulness moments come from single-channel reductions, and one (max, max - min)
    histogram yields saturation and the grayscale test together.
    """
    _single_threaded_cv2()
    img = decode_image(data, name=name, max_side=WORKING_SIDE, max_pixels=max_pixels)
    rgb = img.rgb
    n = rgb.shape[0] * rgb.shape[1]
    r, g, b = cv2.split(rgb)
    luma = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)

    stats = [cv2.meanStdDev(c) for c in (r, g, b)]
    means = [float(m[0][0]) for m, _ in stats]
    stds = [float(s[0][0]) for _, s in stats]
    luma_mean, luma_std = (float(v[0][0]) for v in cv2.meanStdDev(luma))
    channel_max = cv2.max(cv2.max(r, g), b)
    spread = cv2.subtract(channel_max, cv2.min(cv2.min(r, g), b))
    by_max_spread = cv2.calcHist([channel_max, spread], [0, 1], None, [256, 256],
                                 [0, 256, 0, 256])
    laplacian = cv2.Laplacian(luma, cv2.CV_16S)  # exact integers for 8-bit input
    sharpness = float(cv2.meanStdDev(laplacian)[1][0][0]) ** 2
    edges = cv2.Canny(luma, CANNY_LOW, CANNY_HIGH)
    edge_density = float(cv2.countNonZero(edges)) / n
    phash, dhash = perceptual_hashes(luma)
    return {
        "width": img.width,
        "height": img.height,
        "mode": img.mode,
        "format": img.format,
        "n_frames": img.n_frames,
        "bytes": len(data),
        "aspect": img.width / img.height,
        "mean_r": means[0],
        "mean_g": means[1],
        "mean_b": means[2],
        "std_r": stds[0],
        "std_g": stds[1],
        "std_b": stds[2],
        "brightness": luma_mean / 255.0,
        "contrast": luma_std / 255.0,
        # Elementwise, never np.dot: numpy's BLAS would start a thread per core for this one
        # product and oversubscribe every worker process (half the CPU time wasted).
        "saturation": float((by_max_spread * _hsv_saturation()).sum()) / n / 255.0,
        "colorfulness": _colorfulness(r, g, b, means),
        "entropy": _entropy(luma),
        "sharpness": sharpness,
        "edge_density": edge_density,
        "is_grayscale": _is_grayscale(by_max_spread.sum(axis=0), n),
        "content_hash": content_hash(data),
        "phash": phash,
        "dhash": dhash,
        "features_version": FEATURES_VERSION,
    }


@lru_cache(maxsize=1)
def _hsv_saturation() -> np.ndarray:
    """OpenCV's 8-bit HSV saturation for every (max, max - min) pair, taken from cvtColor itself.

    S depends only on V = max and max - min, so the mean S of an image is its (max, spread)
    histogram weighted by this table: the same number as averaging cvtColor(RGB2HSV)[..., 1],
    without building the HSV image.
    """
    v, d = np.meshgrid(np.arange(256), np.arange(256), indexing="ij")
    valid = d <= v
    pixels = np.stack([v, v - d, v - d], axis=-1).clip(0, 255).astype(np.uint8)
    sat = cv2.cvtColor(pixels, cv2.COLOR_RGB2HSV)[..., 1].astype(np.float64)
    return np.where(valid, sat, 0.0)


def _colorfulness(r: np.ndarray, g: np.ndarray, b: np.ndarray, means: list[float]) -> float:
    """Hasler & Suesstrunk (2003) colourfulness on the 0..255 scale (~0 gray, >100 vivid).

    rg = R - G and yb = (R + G) / 2 - B. Their second moments come from three exact sums of
    squared channel differences (yb^2 = (2(R-B)^2 + 2(G-B)^2 - (R-G)^2) / 4), so no float image
    is ever built.
    """
    n = r.size
    rg2 = cv2.norm(r, g, cv2.NORM_L2SQR) / n
    rb2 = cv2.norm(r, b, cv2.NORM_L2SQR) / n
    gb2 = cv2.norm(g, b, cv2.NORM_L2SQR) / n
    yb2 = (2.0 * rb2 + 2.0 * gb2 - rg2) / 4.0
    mean_rg = means[0] - means[1]
    mean_yb = 0.5 * (means[0] + means[1]) - means[2]
    std_rg = math.sqrt(max(rg2 - mean_rg * mean_rg, 0.0))
    std_yb = math.sqrt(max(yb2 - mean_yb * mean_yb, 0.0))
    return float(math.hypot(std_rg, std_yb) + 0.3 * math.hypot(mean_rg, mean_yb))


def _entropy(luma: np.ndarray) -> float:
    """Shannon entropy (bits, 0..8) of the 256-bin luma histogram: low means little content."""
    hist = cv2.calcHist([luma], [0], None, [256], [0, 256]).ravel().astype(np.float64)
    p = hist[hist > 0] / luma.size
    return float(-(p * np.log2(p)).sum())


def _is_grayscale(spread_hist: np.ndarray, n: int) -> bool:
    """Channels nearly equal everywhere, allowing the chroma noise JPEG adds to gray images.

    ``spread_hist``: how many pixels have each channel spread (max - min), 0..255.
    """
    counts = spread_hist.ravel().astype(np.float64)
    colour_fraction = counts[_GRAY_SPREAD + 1:].sum() / n
    mean_spread = float((counts * np.arange(256)).sum()) / n
    return bool(colour_fraction <= _GRAY_MAX_COLOUR_FRACTION
                and mean_spread <= _GRAY_MAX_MEAN_SPREAD)
