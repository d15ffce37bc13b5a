"""Benchmark exoray's vector indices: build time, query latency and recall@10 vs exact search.

Data: ``clustered_vectors`` (512-d, one planted cluster per 500 vectors), queries held out
from the same distribution. Exact ground truth comes from the flat index, so the flat row
doubles as the baseline every ratio is taken against. Single-query latency is what a
notebook user feels (one "more like this" click); batch latency is per query when all
queries go in one call.

    python benchmarks/bench_index.py                      # 100k and 1M
    python benchmarks/bench_index.py --sizes 100000 --kinds hnsw,ivfpq
    python benchmarks/bench_index.py --sizes 1000000 --hnsw-m 16 --hnsw-ef-construction 40
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass

import faiss
import numpy as np

from exoray.index import INDEX_KINDS, build_index, clustered_vectors, search_index
from exoray.index.faiss_index import search_settings
from exoray.index.params import HNSW_EF_CONSTRUCTION, HNSW_M

K = 10


@dataclass
class Row:
    """One (size, kind) measurement."""

    n: int
    kind: str
    build_s: float
    size_mb: float
    batch_ms: float
    single_ms_p50: float
    single_ms_p95: float
    recall: float
    settings: str


def measure(
    kind: str,
    base: np.ndarray,
    queries: np.ndarray,
    truth: np.ndarray | None,
    args: argparse.Namespace,
) -> tuple[Row, np.ndarray]:
    """Build one index, time its queries and score its top-10 against ``truth``."""
    t0 = time.perf_counter()
    index = build_index(
        base, kind, seed=args.seed, hnsw_m=args.hnsw_m, ef_construction=args.hnsw_ef_construction
    )
    build_s = time.perf_counter() - t0
    search_index(index, queries[:8], K)  # warm caches and thread pools
    t0 = time.perf_counter()
    _, found = search_index(index, queries, K)
    batch_ms = (time.perf_counter() - t0) * 1e3 / len(queries)
    singles = []
    for q in queries[: args.single]:
        t0 = time.perf_counter()
        search_index(index, q, K)
        singles.append((time.perf_counter() - t0) * 1e3)
    truth = found if truth is None else truth
    recall = float(np.mean([len(set(t) & set(f)) / K for t, f in zip(truth, found, strict=True)]))
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "index.faiss")
        faiss.write_index(index, path)
        size_mb = os.path.getsize(path) / 2**20
    settings = ", ".join(f"{k}={v:g}" for k, v in search_settings(index).items())
    row = Row(
        n=len(base),
        kind=kind,
        build_s=build_s,
        size_mb=size_mb,
        batch_ms=batch_ms,
        single_ms_p50=statistics.median(singles),
        single_ms_p95=float(np.percentile(singles, 95)),
        recall=recall,
        settings=settings,
    )
    del index
    return row, found


def print_table(rows: list[Row]) -> None:
    head = (
        f"{'N':>9} {'kind':<6} {'build s':>8} {'size MB':>8} {'batch ms/q':>10} "
        f"{'1-q p50 ms':>10} {'1-q p95 ms':>10} {'recall@10':>9}  settings"
    )
    print(head)
    print("-" * len(head))
    for r in rows:
        print(
            f"{r.n:>9,} {r.kind:<6} {r.build_s:>8.1f} {r.size_mb:>8.0f} {r.batch_ms:>10.3f} "
            f"{r.single_ms_p50:>10.3f} {r.single_ms_p95:>10.3f} {r.recall:>9.3f}  {r.settings}"
        )


def print_ratios(rows: list[Row]) -> None:
    print("\nratios vs flat (exact) at the same N:")
    for n in sorted({r.n for r in rows}):
        flat = next((r for r in rows if r.n == n and r.kind == "flat"), None)
        if flat is None:
            continue
        for r in rows:
            if r.n != n or r.kind == "flat":
                continue
            print(
                f"  N={n:>9,} {r.kind:<6} build x{r.build_s / max(flat.build_s, 1e-9):7.1f}  "
                f"size x{r.size_mb / flat.size_mb:5.2f}  "
                f"1-query speedup x{flat.single_ms_p50 / r.single_ms_p50:6.1f}  "
                f"batch speedup x{flat.batch_ms / r.batch_ms:6.1f}  "
                f"recall {r.recall:.3f}"
            )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100000,1000000", help="comma-separated N values")
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--kinds", default=",".join(INDEX_KINDS), help="subset of flat,hnsw,ivfpq")
    parser.add_argument("--queries", type=int, default=300, help="held-out queries for recall")
    parser.add_argument("--single", type=int, default=100, help="queries timed one at a time")
    parser.add_argument("--per-cluster", type=int, default=500, help="vectors per planted cluster")
    parser.add_argument("--hnsw-m", type=int, default=HNSW_M)
    parser.add_argument("--hnsw-ef-construction", type=int, default=HNSW_EF_CONSTRUCTION)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    sizes = [int(s.replace("_", "")) for s in args.sizes.split(",") if s]
    kinds = [k for k in args.kinds.split(",") if k]
    unknown = sorted(set(kinds) - set(INDEX_KINDS))
    if unknown:
        parser.error(f"unknown kinds {unknown}; valid: {', '.join(INDEX_KINDS)}")
    kinds = ["flat"] + [k for k in kinds if k != "flat"]  # flat is the ground truth

    print(
        f"# {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs visible, "
        f"faiss {faiss.__version__} with {faiss.omp_get_max_threads()} threads, "
        f"load avg {os.getloadavg()[0]:.1f}"
    )
    rows: list[Row] = []
    for n in sizes:
        t0 = time.perf_counter()
        x, _ = clustered_vectors(
            n + args.queries, args.dim, max(1, n // args.per_cluster), args.seed
        )
        base, queries = x[:n], x[n:]
        print(f"# N={n:,}: generated {base.shape} in {time.perf_counter() - t0:.1f}s", flush=True)
        truth = None
        for kind in kinds:
            row, found = measure(kind, base, queries, truth, args)
            if kind == "flat":
                truth = found
            rows.append(row)
            print_table([row])
            sys.stdout.flush()
        del x, base, queries
    print()
    print_table(rows)
    print_ratios(rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
