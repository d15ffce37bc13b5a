"""From embeddings to 2-D: a PCA to 50-d, then PaCMAP or UMAP fitted on a sample.

Neighbour-graph methods cost time per fitted point (512-d, 2 vCPUs, CPU seconds: PaCMAP 23 s
and UMAP 93 s for 20k points, 61 s and 111 s for 100k; benchmarks/bench_map.py; a seeded UMAP
runs on one thread), so they see a sample; :mod:`exoray.embedmap.place` puts
every other point beside its nearest fitted neighbours. PCA first makes every neighbour search
run in 50 instead of 512 dimensions and drops the noisiest directions.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np

METHODS = ("pacmap", "umap")
DEFAULT_METHOD = "pacmap"  # bench_map.py: 1.8-4x less CPU than UMAP, same quality
PCA_DIM = 50
MIN_FIT_POINTS = 20
"""Below this many points a neighbour graph is meaningless (PaCMAP needs 10 neighbours plus
mid-near and far pairs per point): the map is the first two principal components instead."""

_PIP = {"pacmap": "pacmap", "umap": "umap-learn"}


def pca_basis(sample: np.ndarray, dim: int = PCA_DIM) -> tuple[np.ndarray, np.ndarray]:
    """(mean, components (k, d)) of ``sample``'s top ``k = min(dim, d, n)`` principal axes.

    An eigen-decomposition of the d x d covariance: exact, deterministic, and cheap for d ~ 512
    whatever the sample size. Each axis's sign is fixed (largest entry positive) so that the
    same data always gives the same map, not a mirrored one.
    """
    x = np.asarray(sample, dtype=np.float64)
    mean = x.mean(axis=0)
    centred = x - mean
    cov = centred.T @ centred / max(len(x) - 1, 1)
    values, vectors = np.linalg.eigh(cov)
    k = max(1, min(dim, x.shape[1], len(x)))
    top = vectors[:, np.argsort(values)[::-1][:k]].T
    signs = np.sign(top[np.arange(k), np.argmax(np.abs(top), axis=1)])
    top *= np.where(signs == 0, 1.0, signs)[:, None]
    return mean.astype(np.float32), np.ascontiguousarray(top, dtype=np.float32)


def project(vectors: np.ndarray, mean: np.ndarray, components: np.ndarray,
            chunk: int = 65_536) -> np.ndarray:
    """``vectors`` in the PCA basis, float32, chunked so a million rows never double in memory."""
    out = np.empty((len(vectors), len(components)), dtype=np.float32)
    for start in range(0, len(vectors), chunk):
        block = np.asarray(vectors[start:start + chunk], dtype=np.float32) - mean
        out[start:start + chunk] = block @ components.T
    return out


def check_method(method: str) -> str:
    if method not in METHODS:
        raise ValueError(f"unknown map method {method!r}; use one of: {', '.join(METHODS)}")
    return method


def require(method: str) -> Any:
    """The module behind ``method``, or an ImportError naming the pip install."""
    check_method(method)
    try:
        with warnings.catch_warnings():  # umap: "Tensorflow not installed; ParametricUMAP ..."
            warnings.simplefilter("ignore", ImportWarning)
            if method == "pacmap":
                import pacmap as module
            else:
                import umap as module
    except ImportError as exc:
        raise ImportError(f"the {method} map needs the {_PIP[method]} package; install it with: "
                          f"pip install 'exoray[map]' (or pip install {_PIP[method]})") from exc
    return module


def fit_2d(points: np.ndarray, method: str, *, seed: int = 0) -> np.ndarray:
    """(n, 2) float32 coordinates of ``points`` (already PCA-reduced) by ``method``.

    Deterministic for a given ``seed``: both libraries then use seeded, single-threaded
    neighbour searches and seeded pair sampling.
    """
    module = require(method)
    x = np.ascontiguousarray(points, dtype=np.float32)
    if len(x) < MIN_FIT_POINTS:
        raise ValueError(f"a {method} map needs at least {MIN_FIT_POINTS} points, got {len(x)}")
    with _quiet(method), _faiss_threads_kept():
        if method == "pacmap":
            reducer = module.PaCMAP(n_components=2, n_neighbors=10, random_state=int(seed),
                                    apply_pca=False, knn_backend="faiss")
        else:
            reducer = module.UMAP(n_components=2, n_neighbors=min(15, len(x) - 1),
                                  random_state=int(seed), n_jobs=1, init="spectral")
        xy = reducer.fit_transform(x)
    return np.ascontiguousarray(xy, dtype=np.float32)


def pca_2d(points: np.ndarray) -> np.ndarray:
    """The first two principal components (zeros where there are fewer): the small-set map."""
    xy = np.zeros((len(points), 2), dtype=np.float32)
    if len(points) == 0:
        return xy
    mean, components = pca_basis(points, 2)
    xy[:, :len(components)] = project(points, mean, components)
    return xy


@contextlib.contextmanager
def _quiet(method: str) -> Iterator[None]:
    """PaCMAP logs 'random state is set' and the like as warnings on every fit; UMAP warns about
    its own internals. Neither is something a user can act on, so they stay out of the output."""
    logger = logging.getLogger(method)
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", module=r"(umap|pacmap|pynndescent|sklearn)\b")
            yield
    finally:
        logger.setLevel(level)


@contextlib.contextmanager
def _faiss_threads_kept() -> Iterator[None]:
    """A seeded PaCMAP sets faiss to one thread for good; put the caller's setting back."""
    try:
        import faiss
    except ImportError:
        yield
        return
    before = faiss.omp_get_max_threads()
    try:
        yield
    finally:
        faiss.omp_set_num_threads(before)
