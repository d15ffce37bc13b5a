"""Pick a subset of images to look at: uniformly, maximally diverse, or one per cluster.

All samplers are deterministic for a given ``seed`` and return int64 row numbers into the
vectors (or into ``range(n_total)``). Asking for ``n`` >= the number of rows is not an
error: every row is returned, as ``np.arange(n_total)``, so "sample 1000" on a 500-image
collection simply shows all 500.
"""

from __future__ import annotations

import math

import numpy as np

from exoray.index.cluster import spherical_kmeans
from exoray.index.vectors import as_matrix

KCENTER_CHUNK_ROWS = 32_768
"""Rows per matrix-vector product in k-center: 64 MiB of 512-d float32, temporaries stay small."""


def random_sample(n_total: int, n: int, seed: int = 0) -> np.ndarray:
    """``n`` distinct rows drawn uniformly from ``range(n_total)``, sorted ascending."""
    n = _clamp(n, n_total)
    if n == n_total:
        return np.arange(n_total, dtype=np.int64)
    rows = np.random.default_rng(seed).choice(n_total, size=n, replace=False)
    return np.sort(rows).astype(np.int64)


def kcenter_greedy(vectors: np.ndarray, n: int, *, seed: int = 0) -> np.ndarray:
    """``n`` rows chosen by farthest-point traversal, in pick order (every prefix is diverse).

    Starts from a seeded random row, then repeatedly takes the row farthest (by angle) from
    everything picked so far -- the classic 2-approximation of the k-center problem, which
    covers rare clusters that uniform sampling misses (and outliers too: that is its nature).
    Memory is O(N): one running best-similarity per row, never an N x N matrix; each pick
    costs one chunked pass over the vectors (~4 ms for 100k x 512 on 2 cores, so 1000 picks
    take ~4 s). Ties go to the lowest row.
    """
    x = as_matrix(vectors)
    total = len(x)
    n = _clamp(n, total)
    if n in (0, total):
        return _all_or_nothing(n)
    first = int(np.random.default_rng(seed).integers(total))
    return _kcenter(x, n, first)


def cluster_stratified_sample(
    vectors: np.ndarray, n: int, *, seed: int = 0, k: int | None = None
) -> np.ndarray:
    """``n`` rows drawn from ``k`` spherical k-means clusters in proportion to their sizes.

    Every non-empty cluster gets at least one row when ``n >= k``; the rest is split by
    largest remainder and drawn uniformly inside each cluster. ``k`` defaults to
    ``min(n, isqrt(N))`` (N = number of rows). Sorted ascending.
    """
    x = as_matrix(vectors)
    total = len(x)
    n = _clamp(n, total)
    if n in (0, total):
        return _all_or_nothing(n)
    if k is None:
        k = max(1, min(n, math.isqrt(total)))
    result = spherical_kmeans(x, k, seed=seed)
    counts = _allocate(result.sizes, n)
    rng = np.random.default_rng(seed)
    picks = [
        rng.choice(np.flatnonzero(result.assign == c), size=int(m), replace=False)
        for c, m in enumerate(counts)
        if m
    ]
    return np.sort(np.concatenate(picks)).astype(np.int64)


# --------------------------------------------------------------------------- internals


def _all_or_nothing(n: int) -> np.ndarray:
    """The answer when nothing needs choosing: no rows, or every one of the ``n`` rows."""
    return np.arange(n, dtype=np.int64)


def _clamp(n: int, total: int) -> int:
    """``min(n, total)`` after checking both are non-negative integers."""
    for label, value in (("n", n), ("n_total", total)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
            raise ValueError(f"{label} must be a non-negative integer; got {value!r}")
    return int(min(n, total))


def _kcenter(x: np.ndarray, n: int, first: int) -> np.ndarray:
    """Farthest-point traversal from row ``first``, tracking each row's best similarity."""
    total = len(x)
    # On the unit sphere "farthest from every pick" = "lowest max-cosine to any pick".
    best = np.full(total, -np.inf, dtype=np.float32)
    buf = np.empty(min(KCENTER_CHUNK_ROWS, total), dtype=np.float32)
    picks = [first]
    while len(picks) < n:
        c = x[picks[-1]]
        for lo in range(0, total, KCENTER_CHUNK_ROWS):
            hi = min(total, lo + KCENTER_CHUNK_ROWS)
            sims = buf[: hi - lo]
            np.dot(x[lo:hi], c, out=sims)
            np.maximum(best[lo:hi], sims, out=best[lo:hi])
        best[picks[-1]] = np.inf  # a picked row is never picked again, even among duplicates
        picks.append(int(np.argmin(best)))
    return np.asarray(picks, dtype=np.int64)


def _allocate(sizes: np.ndarray, n: int) -> np.ndarray:
    """Split ``n`` picks over clusters of ``sizes``: one each first, then by largest remainder
    (Hamilton's method), never more than a cluster holds."""
    sizes = np.asarray(sizes, dtype=np.int64)
    alloc = np.zeros(len(sizes), dtype=np.int64)
    nonempty = sizes > 0
    if n >= int(nonempty.sum()):
        alloc[nonempty] = 1
    remaining = n - int(alloc.sum())
    while remaining > 0:  # repeats only when a cluster's share exceeded its size
        room = sizes - alloc
        open_ = np.flatnonzero(room > 0)
        quota = remaining * sizes[open_] / sizes[open_].sum()
        take = np.minimum(np.floor(quota).astype(np.int64), room[open_])
        left = remaining - int(take.sum())
        by_remainder = np.argsort(-(quota - np.floor(quota)), kind="stable")
        extra = by_remainder[take[by_remainder] < room[open_][by_remainder]][:left]
        take[extra] += 1
        alloc[open_] += take
        remaining -= int(take.sum())
    return alloc
