"""Placing points the 2-D fit did not see: beside their nearest fitted neighbours.

PaCMAP's ``transform`` re-runs the optimisation with the new points as extra data (its docs warn
a point may land elsewhere than its twin; measured 12x slower per point than this), and UMAP's
``transform`` exists for UMAP only (measured about as fast as this). The map only has to show
each image among the images it resembles, so a point goes to the inverse-distance weighted mean
of its ``k`` nearest fitted neighbours, found by FAISS in the PCA space the fit used (exhaustive
search, or an IVF index for many queries): one rule for every method, an exact duplicate lands
on its twin, a point between two groups between them. Numbers: benchmarks/bench_map.py.
"""

from __future__ import annotations

import numpy as np

from exoray.index._faiss import require_faiss

PLACE_NEIGHBOURS = 5
IVF_MIN_FITTED = 10_000
IVF_QUERIES_PER_ROOT = 200
"""An IVF index (4 sqrt(m) lists, 16 probed) scans ~8 sqrt(m) points per query instead of all m,
but its training costs about as much as 100 sqrt(m) exhaustive queries: it pays off from about
200 sqrt(m) queries (28k for 20k fitted points, 63k for 100k)."""
QUERY_CHUNK = 32_768


def use_ivf(n_fitted: int, n_queries: int) -> bool:
    return n_fitted >= IVF_MIN_FITTED and n_queries >= IVF_QUERIES_PER_ROOT * np.sqrt(n_fitted)


def placement_label(n_fitted: int, n_queries: int, k: int = PLACE_NEIGHBOURS) -> str:
    """How :func:`place` will search, for the map's record."""
    return f"knn{min(k, n_fitted)}-{'ivf' if use_ivf(n_fitted, n_queries) else 'exact'}"


def place(fitted_points: np.ndarray, fitted_xy: np.ndarray, queries: np.ndarray, *,
          k: int = PLACE_NEIGHBOURS, seed: int = 0) -> np.ndarray:
    """(len(queries), 2) coordinates: each query at the weighted mean of its neighbours' ``xy``.

    ``fitted_points`` and ``queries`` live in the same (PCA) space; ``fitted_xy`` are the fitted
    points' map coordinates. Deterministic for a given ``seed`` (the IVF training).
    """
    out = np.zeros((len(queries), 2), dtype=np.float32)
    if len(queries) == 0:
        return out
    if len(fitted_points) == 0:
        raise ValueError("no fitted points to place the others beside")
    k = min(k, len(fitted_points))
    index = _search_index(np.ascontiguousarray(fitted_points, dtype=np.float32), len(queries),
                          seed)
    for start in range(0, len(queries), QUERY_CHUNK):
        block = np.ascontiguousarray(queries[start:start + QUERY_CHUNK], dtype=np.float32)
        dist2, nearest = index.search(block, k)
        out[start:start + len(block)] = _weighted_mean(fitted_xy, dist2, nearest)
    return out


def _search_index(fitted: np.ndarray, n_queries: int, seed: int):
    faiss = require_faiss()
    dim = fitted.shape[1]
    if not use_ivf(len(fitted), n_queries):
        index = faiss.IndexFlatL2(dim)
        index.add(fitted)
        return index
    nlist = int(4 * np.sqrt(len(fitted)))
    index = faiss.IndexIVFFlat(faiss.IndexFlatL2(dim), dim, nlist)
    index.cp.seed = int(seed)
    index.train(fitted)
    index.add(fitted)
    index.nprobe = 16
    return index


def _weighted_mean(xy: np.ndarray, dist2: np.ndarray, nearest: np.ndarray) -> np.ndarray:
    """Inverse-distance weights; IVF may return -1 (fewer than k found): those are skipped."""
    found = nearest >= 0
    dist = np.sqrt(np.maximum(dist2, 0.0)).astype(np.float64)
    scale = np.where(found, dist, np.inf).min(axis=1, keepdims=True)
    weights = np.where(found, 1.0 / (dist + 1e-6 * (scale + 1e-12)), 0.0)
    exact = found & (dist <= 1e-12)
    weights = np.where(exact.any(axis=1, keepdims=True), exact.astype(np.float64), weights)
    coords = xy[np.where(found, nearest, 0)].astype(np.float64)
    total = weights.sum(axis=1, keepdims=True)
    return (np.einsum("ij,ijk->ik", weights, coords) / np.maximum(total, 1e-300)).astype(
        np.float32)
