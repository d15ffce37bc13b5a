"""Synthetic clustered embeddings with planted labels, shared by tests and benchmarks.

Real image embeddings (CLIP, DINO) are clustered and have a low intrinsic dimension: an
isotropic Gaussian cloud in 512-d would make every neighbour nearly equidistant and is a
worst case no real collection resembles. Each planted cluster is therefore a centre plus
variation inside its own random low-dimensional subspace, plus a little isotropic noise.
"""

from __future__ import annotations

import math

import numpy as np

from exoray.index.vectors import l2_normalize


def clustered_vectors(
    n: int,
    dim: int,
    n_clusters: int,
    seed: int = 0,
    *,
    spread: float = 0.6,
    intrinsic_dim: int = 16,
    noise: float = 0.05,
) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(vectors, labels)``: ``n`` L2-normalised float32 rows and their planted cluster.

    ``spread`` is the ratio of within-cluster variation to the centre's norm (0.6 gives a
    cosine to the centre of about 0.85), ``intrinsic_dim`` the dimension of each cluster's
    subspace and ``noise`` the isotropic part. Cluster sizes are moderately uneven
    (log-normal weights); every cluster gets at least one member when ``n >= n_clusters``.
    """
    if n < 1 or dim < 2 or n_clusters < 1:
        raise ValueError(
            f"clustered_vectors needs n >= 1, dim >= 2 and n_clusters >= 1; "
            f"got n={n}, dim={dim}, n_clusters={n_clusters}"
        )
    rng = np.random.default_rng(seed)
    sub = max(1, min(intrinsic_dim, dim))
    centers = l2_normalize(rng.standard_normal((n_clusters, dim), dtype=np.float32))
    bases = rng.standard_normal((n_clusters, sub, dim), dtype=np.float32) / np.float32(
        math.sqrt(dim)
    )
    weights = rng.lognormal(0.0, 0.5, n_clusters)
    labels = rng.choice(n_clusters, size=n, p=weights / weights.sum())
    head = min(n, n_clusters)
    labels[:head] = np.arange(head)
    rng.shuffle(labels)
    out = np.empty((n, dim), dtype=np.float32)
    chunk = 65_536
    for start in range(0, n, chunk):
        lab = labels[start : start + chunk]
        # Basis rows have norm ~1, so a subspace offset has norm ~spread.
        z = rng.standard_normal((len(lab), sub), dtype=np.float32) * np.float32(
            spread / math.sqrt(sub)
        )
        eps = rng.standard_normal((len(lab), dim), dtype=np.float32) * np.float32(
            noise / math.sqrt(dim)
        )
        out[start : start + len(lab)] = centers[lab] + _project(z, bases, lab) + eps
    return l2_normalize(out), labels.astype(np.int64)


def _project(z: np.ndarray, bases: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Map each row's subspace coordinates through its cluster's basis, one cluster at a time."""
    out = np.empty((len(z), bases.shape[2]), dtype=np.float32)
    for c in np.unique(labels):
        rows = np.nonzero(labels == c)[0]
        out[rows] = z[rows] @ bases[c]
    return out
