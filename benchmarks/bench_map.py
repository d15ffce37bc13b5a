"""Benchmark the 2-D embedding map: PaCMAP vs UMAP fit, and ways to place the points not fitted.

Data: ``clustered_vectors(n, 512, n // 2000 clusters)`` (unit rows, planted labels), reduced to
50-d by exoray's PCA step (timed too), exactly what ``exoray map`` fits. Then:

* **fit**: PaCMAP and UMAP (``exoray.embedmap.reduce.fit_2d``: seeded, the settings ``exoray map``
  uses) on all ``n`` points; the ratio UMAP/PaCMAP is the number that picks the default.
* **placement** of ``--place`` extra points from the same clusters beside the PaCMAP fit:
  exoray's k-nearest-fitted-neighbours mean (FAISS) vs UMAP's own ``transform`` and PaCMAP's
  ``transform`` (which re-optimises; timed on at most 1,000 points), as points per second.
* **quality**: in the map, the share of each point's 10 nearest 2-D neighbours from its planted
  cluster (1.0 = clusters perfectly apart), for the fits and for the placed points (their 10
  nearest fitted points in 2-D).

Wall seconds and process CPU seconds are both printed: on a shared machine the CPU seconds are
the steadier comparison.

    python benchmarks/bench_map.py --n 20000            # ~10 min on 2 busy cores
    python benchmarks/bench_map.py --n 100000 --place 20000
    python benchmarks/bench_map.py --n 20000 --place 300000 --methods pacmap --skip-transform
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import bench_parser, cpu_busy, cpu_ticks, git_revision, machine, wait_for_quiet  # noqa: E402

from exoray.embedmap.place import place, placement_label  # noqa: E402
from exoray.embedmap.reduce import PCA_DIM, fit_2d, pca_basis, project, require  # noqa: E402
from exoray.index import clustered_vectors  # noqa: E402

AGREEMENT_K = 10


def timed(label: str, fn: Callable[[], object], wait: float) -> tuple[object, float, float]:
    """(result, wall s, cpu s) of ``fn()``, printed with how busy the machine was."""
    wait_for_quiet(wait)
    ticks, cpu0, t0 = cpu_ticks(), time.process_time(), time.perf_counter()
    out = fn()
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    busy = cpu_busy(ticks, cpu_ticks())
    note = f"   [machine busy {busy:4.0%}]" if busy is not None else ""
    print(f"  {label:<44s} {wall:9.2f} s wall {cpu:9.2f} s cpu{note}", flush=True)
    return out, wall, cpu


def agreement(xy: np.ndarray, labels: np.ndarray, ref_xy: np.ndarray | None = None,
              ref_labels: np.ndarray | None = None) -> float:
    """Share of the 10 nearest map neighbours (in ``ref``, default ``xy`` itself) with the
    same planted label."""
    import faiss

    same = ref_xy is None
    ref_xy = xy if same else ref_xy
    ref_labels = labels if same else ref_labels
    index = faiss.IndexFlatL2(2)
    index.add(np.ascontiguousarray(ref_xy, dtype=np.float32))
    _, nearest = index.search(np.ascontiguousarray(xy, dtype=np.float32),
                              AGREEMENT_K + int(same))
    nearest = nearest[:, 1:] if same else nearest
    return float((ref_labels[nearest] == labels[:, None]).mean())


def main() -> int:
    parser = bench_parser(__doc__, wait_quiet=0.0)
    parser.add_argument("--n", type=int, default=20_000, help="points fitted (default 20000)")
    parser.add_argument("--place", type=int, default=5_000,
                        help="extra points placed beside the fit (default 5000)")
    parser.add_argument("--methods", nargs="+", default=["pacmap", "umap"])
    parser.add_argument("--skip-transform", action="store_true",
                        help="time only exoray's placement, not the libraries' transforms")
    args = parser.parse_args()
    print(f"bench_map @ {git_revision()} on {machine()}")
    clusters = max(10, args.n // 2000)
    x, labels = clustered_vectors(args.n + args.place, 512, clusters, seed=args.seed)
    fit_x, fit_labels = x[:args.n], labels[:args.n]
    rest_x, rest_labels = x[args.n:], labels[args.n:]
    print(f"{args.n:,} fitted + {args.place:,} placed points, 512-d, {clusters} planted clusters")

    (mean, components), _, _ = timed(f"pca {PCA_DIM}-d basis ({args.n:,} points)",
                                     lambda: pca_basis(fit_x), args.wait_quiet)
    reduced, rest = project(fit_x, mean, components), project(rest_x, mean, components)
    fits: dict[str, tuple[np.ndarray, float, float]] = {}
    for method in args.methods:
        require(method)
        fit_2d(reduced[:200], method, seed=args.seed)  # numba compilation is not the fit
        xy, wall, cpu = timed(f"{method} fit", lambda m=method: fit_2d(reduced, m, seed=args.seed),
                              args.wait_quiet)
        fits[method] = (xy, wall, cpu)
        print(f"    {method} 2-D kNN label agreement: {agreement(xy, fit_labels):.3f}")
    if {"pacmap", "umap"} <= fits.keys():
        print(f"  umap / pacmap fit: {fits['umap'][1] / fits['pacmap'][1]:.2f}x wall, "
              f"{fits['umap'][2] / fits['pacmap'][2]:.2f}x cpu")

    base_method = "pacmap" if "pacmap" in fits else args.methods[0]
    base_xy = fits[base_method][0]
    label = placement_label(len(reduced), len(rest))
    placed, wall, _ = timed(f"knn placement ({label}, {len(rest):,} points)",
                            lambda: place(reduced, base_xy, rest, seed=args.seed),
                            args.wait_quiet)
    knn_rate = len(rest) / max(wall, 1e-9)
    print(f"    {knn_rate:,.0f} points/s; placed-point agreement with fitted neighbours: "
          f"{agreement(placed, rest_labels, base_xy, fit_labels):.3f}")
    for method in [] if args.skip_transform else args.methods:
        rate = transform_rate(method, reduced, rest, rest_labels, fit_labels, args)
        if rate:
            print(f"  knn placement / {method} transform: {knn_rate / rate:,.0f}x faster")
    return 0


def transform_rate(method: str, reduced: np.ndarray, rest: np.ndarray, rest_labels: np.ndarray,
                   fit_labels: np.ndarray, args) -> float | None:
    """Points per second of the library's own transform (after a fit that is not timed)."""
    module = require(method)
    if method == "pacmap":
        reducer = module.PaCMAP(n_components=2, n_neighbors=10, random_state=args.seed,
                                apply_pca=False, save_tree=True)
        queries, query_labels = rest[:1000], rest_labels[:1000]
    else:
        reducer = module.UMAP(n_components=2, n_neighbors=15, random_state=args.seed, n_jobs=1)
        queries, query_labels = rest, rest_labels
    fitted_xy = reducer.fit_transform(reduced)
    reducer.transform(queries[:20])  # numba compiles the transform path on its first call
    placed, wall, _ = timed(f"{method} transform ({len(queries):,} points)",
                            lambda: reducer.transform(queries), args.wait_quiet)
    rate = len(queries) / max(wall, 1e-9)
    print(f"    {rate:,.0f} points/s; placed-point agreement: "
          f"{agreement(np.asarray(placed), query_labels, fitted_xy, fit_labels):.3f}")
    return rate


if __name__ == "__main__":
    sys.exit(main())
