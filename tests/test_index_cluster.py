"""Phase VII clustering: spherical k-means recovers planted clusters; medoids are members."""

from __future__ import annotations

from math import comb

import numpy as np
import pytest

from exoray.index import clustered_vectors, spherical_kmeans

pytestmark = pytest.mark.usefixtures("one_faiss_thread")

N, DIM, K = 4000, 64, 10


@pytest.fixture(scope="module")
def planted() -> tuple[np.ndarray, np.ndarray]:
    return clustered_vectors(N, DIM, K, seed=0, spread=0.4)


def adjusted_rand_index(a: np.ndarray, b: np.ndarray) -> float:
    """Agreement of two labelings, 1.0 = identical up to renaming, ~0 = chance."""
    table = np.zeros((a.max() + 1, b.max() + 1), dtype=np.int64)
    np.add.at(table, (a, b), 1)
    pairs = sum(comb(int(v), 2) for v in table.ravel())
    rows = sum(comb(int(v), 2) for v in table.sum(axis=1))
    cols = sum(comb(int(v), 2) for v in table.sum(axis=0))
    expected = rows * cols / comb(len(a), 2)
    return (pairs - expected) / ((rows + cols) / 2 - expected)


def test_recovers_planted_clusters(planted: tuple[np.ndarray, np.ndarray]) -> None:
    x, labels = planted
    result = spherical_kmeans(x, K, seed=0, nredo=3)
    assert adjusted_rand_index(labels, result.assign) >= 0.95
    # purity: each found cluster is dominated by one planted cluster
    majority = sum(
        np.bincount(labels[result.assign == c]).max() for c in range(K) if result.sizes[c]
    )
    assert majority / N >= 0.97


def test_single_seeding_is_still_close(planted: tuple[np.ndarray, np.ndarray]) -> None:
    x, labels = planted
    assert adjusted_rand_index(labels, spherical_kmeans(x, K, seed=1).assign) >= 0.8


def test_result_fields_are_consistent(planted: tuple[np.ndarray, np.ndarray]) -> None:
    x, _ = planted
    r = spherical_kmeans(x, K, seed=0)
    assert r.k == K and r.assign.shape == (N,) and r.assign.dtype == np.int64
    assert r.sizes.sum() == N and np.array_equal(r.sizes, np.bincount(r.assign, minlength=K))
    assert np.allclose(np.linalg.norm(r.centroids, axis=1), 1.0, atol=1e-4)
    expected = 1.0 - np.einsum("ij,ij->i", x, r.centroids[r.assign])
    assert np.allclose(r.distance, expected, atol=1e-4)
    assert r.distance.min() >= -1e-4 and r.distance.max() <= 2.0
    for c in range(K):
        medoid = r.medoids[c]
        assert r.assign[medoid] == c  # the medoid is a member ...
        assert r.distance[medoid] == r.distance[r.assign == c].min()  # ... closest to centroid
        members = r.members(c)
        assert members[0] == medoid and len(members) == r.sizes[c]


def test_deterministic_given_seed(planted: tuple[np.ndarray, np.ndarray]) -> None:
    x, _ = planted
    a, b = spherical_kmeans(x, K, seed=7), spherical_kmeans(x, K, seed=7)
    assert np.array_equal(a.assign, b.assign) and np.array_equal(a.centroids, b.centroids)


def test_k_out_of_range_is_a_clear_error(planted: tuple[np.ndarray, np.ndarray]) -> None:
    x, _ = planted
    with pytest.raises(ValueError, match="k=11 clusters requested but only n=10 vectors"):
        spherical_kmeans(x[:10], 11)
    with pytest.raises(ValueError, match="k must be a positive integer; got 0"):
        spherical_kmeans(x, 0)
    with pytest.raises(ValueError, match="nredo"):
        spherical_kmeans(x, 2, nredo=0)
    with pytest.raises(ValueError, match="cluster must be in 0..9"):
        spherical_kmeans(x, K).members(10)


def test_k_equals_n_and_duplicates() -> None:
    x, _ = clustered_vectors(6, 8, 2, seed=0)
    r = spherical_kmeans(np.vstack([x, x[:2]]), 8)
    assert r.sizes.sum() == 8 and (r.medoids >= -1).all()
    r = spherical_kmeans(x, 6)
    assert sorted(r.assign.tolist()) == list(range(6))
