"""Spherical k-means over unit embeddings, with a medoid (a real image) per cluster.

Centroids are averages no image looks like; the medoid -- the member closest to its
centroid -- is what a notebook can actually show as the cluster's face.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from exoray.index._faiss import require_faiss
from exoray.index.vectors import as_matrix


@dataclass(frozen=True, eq=False)
class ClusterResult:
    """Per-row assignment and per-cluster summaries of a spherical k-means run.

    ``assign[i]`` is row i's cluster, ``distance[i] = 1 - cos(row i, its centroid)``;
    ``centroids`` are unit vectors (k, dim); ``sizes[c]`` counts members; ``medoids[c]`` is the
    member row with the smallest distance (lowest row on ties), -1 for an empty cluster.
    """

    assign: np.ndarray
    distance: np.ndarray
    centroids: np.ndarray
    sizes: np.ndarray
    medoids: np.ndarray

    @property
    def k(self) -> int:
        return int(len(self.centroids))

    def members(self, cluster: int) -> np.ndarray:
        """Rows of ``cluster``, closest to the centroid first."""
        if not 0 <= cluster < self.k:
            raise ValueError(f"cluster must be in 0..{self.k - 1}; got {cluster}")
        rows = np.flatnonzero(self.assign == cluster)
        return rows[np.argsort(self.distance[rows], kind="stable")]


def spherical_kmeans(
    vectors: np.ndarray, k: int, *, seed: int = 0, niter: int = 20, nredo: int = 1
) -> ClusterResult:
    """Cluster L2-normalised ``vectors`` into ``k`` groups by cosine (faiss spherical k-means).

    Seeded with greedy k-means++ rather than faiss's random rows, which on planted clusters
    merge two and split another about half the time. k-means still finds local optima:
    ``nredo`` > 1 runs that many seedings and keeps the partition with the highest total
    cosine to the centroids (at ``nredo`` times the cost). Deterministic for a given
    ``seed``. Beyond 256*k rows faiss trains on a seeded sample of 256*k rows; every row is
    still assigned. ``k`` must be in 1..n.
    """
    x = as_matrix(vectors)
    n = len(x)
    for label, value in (("k", k), ("niter", niter), ("nredo", nredo)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{label} must be a positive integer; got {value!r}")
    if k > n:
        raise ValueError(
            f"k={k} clusters requested but only n={n} vectors given; choose 1 <= k <= {n}"
        )
    rng = np.random.default_rng(seed)
    runs = (_run(x, int(k), rng, seed=int(seed), niter=int(niter)) for _ in range(int(nredo)))
    # Highest total cosine to the centroids wins; ties keep the earliest run.
    _, centroids, sims, assign = max(runs, key=lambda run: run[0])
    distance = (1.0 - sims).astype(np.float32)
    return ClusterResult(
        assign=assign,
        distance=distance,
        centroids=centroids,
        sizes=np.bincount(assign, minlength=k).astype(np.int64),
        medoids=_medoids(assign, distance, int(k)),
    )


def _run(
    x: np.ndarray, k: int, rng: np.random.Generator, *, seed: int, niter: int
) -> tuple[float, np.ndarray, np.ndarray, np.ndarray]:
    """One seeding + training: (total cosine, centroids, per-row cosine, assignment)."""
    centroids = _train(x, k, _kmeanspp(x, k, rng), seed=seed, niter=niter)
    sims, assign = _assign(x, centroids)
    return float(sims.sum(dtype=np.float64)), centroids, sims, assign


def _train(x: np.ndarray, k: int, init: np.ndarray, *, seed: int, niter: int) -> np.ndarray:
    """Run faiss spherical k-means from ``init``; returns unit centroids (k, dim)."""
    faiss = require_faiss()
    km = faiss.Kmeans(
        x.shape[1],
        k,
        niter=niter,
        seed=seed,
        spherical=True,
        min_points_per_centroid=1,  # k is the caller's choice; no stderr warnings about it
        verbose=False,
    )
    km.train(x, init_centroids=init)
    centroids = np.ascontiguousarray(km.centroids, dtype=np.float32)
    norms = np.linalg.norm(centroids, axis=1, keepdims=True)
    return np.divide(centroids, norms, out=np.zeros_like(centroids), where=norms > 0)


def _assign(x: np.ndarray, centroids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Cosine to, and index of, each row's nearest centroid."""
    faiss = require_faiss()
    search = faiss.IndexFlatIP(x.shape[1])
    search.add(centroids)
    sims, nearest = search.search(x, 1)
    return sims[:, 0], nearest[:, 0].astype(np.int64)


def _medoids(assign: np.ndarray, distance: np.ndarray, k: int) -> np.ndarray:
    """Row with the smallest distance in each cluster (lowest row on ties), -1 when empty."""
    order = np.lexsort((np.arange(len(assign)), distance, assign))
    first = np.ones(len(order), dtype=bool)
    first[1:] = assign[order[1:]] != assign[order[:-1]]
    medoids = np.full(k, -1, dtype=np.int64)
    medoids[assign[order[first]]] = order[first]
    return medoids


KMEANSPP_SAMPLE_PER_CLUSTER = 32
"""k-means++ seeds from a sample of 32*k rows (at least 8192): enough to find small clusters."""


def _kmeanspp(x: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """Greedy k-means++ seeds (as in scikit-learn): of 2 + ln k D^2-sampled candidates per
    step keep the one that lowers the total squared distance most. Returns (k, dim) rows."""
    n = len(x)
    m = min(n, max(KMEANSPP_SAMPLE_PER_CLUSTER * k, 8192))
    pool = x if m == n else x[np.sort(rng.choice(n, size=m, replace=False))]
    trials = 2 + int(np.log(k))
    picks = [int(rng.integers(m))]
    best = pool @ pool[picks[0]]  # cosine to the nearest seed so far
    for _ in range(k - 1):
        d2 = np.maximum(2.0 - 2.0 * best, 0.0).astype(np.float64)
        total = d2.sum()
        if total <= 0:  # every row duplicates a seed: any unpicked row will do
            cand = rng.choice(np.setdiff1d(np.arange(m), picks), size=1)
        else:
            cand = rng.choice(m, size=trials, p=d2 / total)
        merged = np.maximum(best[:, None], pool @ pool[cand].T)
        j = int(np.argmin((2.0 - 2.0 * merged).sum(axis=0)))
        picks.append(int(cand[j]))
        best = np.ascontiguousarray(merged[:, j])
    return np.ascontiguousarray(pool[picks], dtype=np.float32)
