"""The whole 2-D layout of a set of vectors, in memory: sample, PCA, fit, place the rest.

No storage here: :mod:`exoray.embedmap.build` reads BASE and writes the result.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from exoray.embedmap.place import place, placement_label
from exoray.embedmap.reduce import (
    MIN_FIT_POINTS,
    PCA_DIM,
    check_method,
    fit_2d,
    pca_2d,
    pca_basis,
    project,
)
from exoray.util.cli_types import positive_int

DEFAULT_SAMPLE = 100_000

Log = Callable[[str], None]


@dataclass(frozen=True, eq=False)
class Layout:
    """``xy[i]`` is row i's map position; ``fitted[i]`` says whether the fit saw it."""

    xy: np.ndarray
    fitted: np.ndarray
    method: str  # pacmap / umap / pca (small sets)
    placement: str  # how unfitted rows were placed ("none" when every row was fitted)
    pca_dim: int
    seconds: dict[str, float] = field(default_factory=dict)


def layout_2d(vectors: np.ndarray, *, method: str = "pacmap", sample: int = DEFAULT_SAMPLE,
              seed: int = 0, log: Log | None = None) -> Layout:
    """Map ``vectors`` (n, d) to 2-D: ``method`` fitted on at most ``sample`` rows, the rest placed.

    The sample is a seeded uniform draw, so the same vectors, ``sample`` and ``seed`` always give
    the same map. Fewer than :data:`MIN_FIT_POINTS` rows get their first two principal
    components (method ``pca``): too few for a neighbour graph, still a picture of the spread.
    """
    check_method(method)
    sample = positive_int(sample, name="sample")
    x = np.asarray(vectors, dtype=np.float32)
    if x.ndim != 2 or len(x) == 0:
        raise ValueError(f"need a non-empty (n, dim) matrix of vectors; got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError("vectors contain NaN or infinity; re-run the embeddings phase")
    say = log or (lambda _line: None)
    seconds: dict[str, float] = {}
    n = len(x)
    fitted = np.zeros(n, dtype=bool)
    if n < MIN_FIT_POINTS:
        fitted[:] = True
        say(f"only {n} points (< {MIN_FIT_POINTS}): the map is their first two principal "
            "components")
        return Layout(pca_2d(x), fitted, "pca", "none", 2, seconds)

    rng = np.random.default_rng(seed)
    rows = np.arange(n) if n <= sample else np.sort(rng.choice(n, size=sample, replace=False))
    fitted[rows] = True
    started = time.perf_counter()
    mean, components = pca_basis(x[rows], PCA_DIM)
    reduced = project(x, mean, components)
    seconds["pca"] = _lap(started)
    say(f"pca: {x.shape[1]}-d -> {reduced.shape[1]}-d on {len(rows):,} points in "
        f"{seconds['pca']:.1f}s")

    started = time.perf_counter()
    xy = np.zeros((n, 2), dtype=np.float32)
    xy[rows] = fit_2d(reduced[rows], method, seed=seed)
    seconds["fit"] = _lap(started)
    say(f"{method}: fitted {len(rows):,} points in {seconds['fit']:.1f}s")

    rest = np.flatnonzero(~fitted)
    label = placement_label(len(rows), len(rest)) if len(rest) else "none"
    if len(rest):
        started = time.perf_counter()
        xy[rest] = place(reduced[rows], xy[rows], reduced[rest], seed=seed)
        seconds["place"] = _lap(started)
        say(f"placed {len(rest):,} more points beside their nearest fitted neighbours ({label}) "
            f"in {seconds['place']:.1f}s")
    return Layout(xy, fitted, method, label, int(reduced.shape[1]), seconds)


def _lap(started: float) -> float:
    return round(time.perf_counter() - started, 2)
