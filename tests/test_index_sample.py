"""Phase VII sampling: uniform, farthest-point (k-center) and cluster-stratified samples."""

from __future__ import annotations

import numpy as np
import pytest

from exoray.index import (
    cluster_stratified_sample,
    clustered_vectors,
    kcenter_greedy,
    random_sample,
)
from exoray.index.sample import _allocate

pytestmark = pytest.mark.usefixtures("one_faiss_thread")

N, DIM, CLUSTERS = 6000, 128, 30


@pytest.fixture(scope="module")
def planted() -> tuple[np.ndarray, np.ndarray]:
    return clustered_vectors(N, DIM, CLUSTERS, seed=2)


def covering_radius(x: np.ndarray, rows: np.ndarray) -> float:
    """Largest cosine distance from any row to its nearest sampled row."""
    return float(1.0 - (x @ x[rows].T).max(axis=1).min())


def test_random_sample_is_uniform_and_deterministic() -> None:
    rows = random_sample(1000, 100, seed=3)
    assert rows.dtype == np.int64 and len(set(rows.tolist())) == 100
    assert np.all(np.diff(rows) > 0) and rows.min() >= 0 and rows.max() < 1000
    assert np.array_equal(rows, random_sample(1000, 100, seed=3))
    assert not np.array_equal(rows, random_sample(1000, 100, seed=4))
    assert np.array_equal(random_sample(5, 10, seed=0), np.arange(5))  # n > available: all
    assert len(random_sample(5, 0)) == 0
    with pytest.raises(ValueError, match="n must be a non-negative integer; got -1"):
        random_sample(10, -1)


def test_kcenter_hits_every_planted_cluster(planted: tuple[np.ndarray, np.ndarray]) -> None:
    x, labels = planted
    rows = kcenter_greedy(x, CLUSTERS, seed=0)
    assert len(set(labels[rows].tolist())) == CLUSTERS
    uniform = random_sample(N, CLUSTERS, seed=0)
    assert len(set(labels[uniform].tolist())) < CLUSTERS
    assert covering_radius(x, rows) < covering_radius(x, uniform)


def test_kcenter_is_deterministic_prefix_stable_and_distinct(
    planted: tuple[np.ndarray, np.ndarray],
) -> None:
    x, _ = planted
    rows = kcenter_greedy(x, 200, seed=5)
    assert rows.dtype == np.int64 and len(set(rows.tolist())) == 200
    assert np.array_equal(rows, kcenter_greedy(x, 200, seed=5))
    assert np.array_equal(rows[:50], kcenter_greedy(x, 50, seed=5))
    assert np.array_equal(kcenter_greedy(x[:10], 20), np.arange(10))
    assert len(kcenter_greedy(x, 0)) == 0


def test_kcenter_matches_brute_force() -> None:
    x, _ = clustered_vectors(300, 16, 5, seed=9)
    rows = kcenter_greedy(x, 25, seed=1)
    sims = x @ x.T  # the O(N^2) reference the real implementation avoids
    picks = [int(rows[0])]
    for _ in range(24):
        picks.append(int(np.argmin(sims[:, picks].max(axis=1))))
    assert rows.tolist() == picks


def test_kcenter_never_repeats_rows_among_duplicates() -> None:
    x, _ = clustered_vectors(5, 8, 1, seed=0)
    rows = kcenter_greedy(np.vstack([x, x, x]), 12)
    assert len(set(rows.tolist())) == 12


def test_stratified_covers_clusters_deterministically(
    planted: tuple[np.ndarray, np.ndarray],
) -> None:
    x, labels = planted
    rows = cluster_stratified_sample(x, 90, seed=0, k=CLUSTERS)
    assert len(rows) == 90 and len(set(rows.tolist())) == 90 and np.all(np.diff(rows) > 0)
    assert len(set(labels[rows].tolist())) >= CLUSTERS - 1
    assert np.array_equal(rows, cluster_stratified_sample(x, 90, seed=0, k=CLUSTERS))
    default_k = cluster_stratified_sample(x, 40, seed=0)  # k = min(n, isqrt(N)) = 40
    assert len(default_k) == 40
    assert np.array_equal(cluster_stratified_sample(x[:30], 50), np.arange(30))


def test_allocate_is_proportional_with_one_each() -> None:
    alloc = _allocate(np.array([890, 100, 0, 10]), 50)
    assert alloc.sum() == 50 and alloc[2] == 0 and alloc.min(initial=1, where=[1, 1, 0, 1]) >= 1
    assert alloc[0] > alloc[1] > alloc[3]
    assert _allocate(np.array([1, 1, 100]), 50).tolist() == [1, 1, 48]
    small = _allocate(np.array([500, 300, 200]), 2)  # fewer picks than clusters
    assert small.sum() == 2 and small.max() == 1
    assert _allocate(np.array([3, 4]), 7).tolist() == [3, 4]
