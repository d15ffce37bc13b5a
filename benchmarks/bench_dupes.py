"""Benchmark perceptual-hash duplicate search against an all-pairs scan.

Random 64-bit phashes with a fraction of planted near-duplicates (copies of a random base with
1..max_distance bits flipped). Times ``find_hash_duplicates`` on all of them, times a vectorised
all-pairs popcount on a subset and extrapolates it quadratically, and checks every planted pair
was grouped.

    python benchmarks/bench_dupes.py                  # 1,000,000 hashes, 1% planted
    python benchmarks/bench_dupes.py --n 200000 --compare-plans
    python benchmarks/bench_dupes.py --joint          # also with dHashes (the crop rule)

Quality on real photo edits (and old vs new rule side by side): bench_dupes_recall.py.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pyarrow.compute as pc

from exoray.image import dupes, hash_index
from exoray.image.dupes import find_hash_duplicates


def make_hashes(
    n: int, planted_fraction: float, max_distance: int, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return (hashes, planted copy indices, their base indices)."""
    rng = np.random.default_rng(seed)
    hashes = rng.integers(0, 2**64, size=n, dtype=np.uint64)
    n_planted = int(n * planted_fraction)
    copies = rng.choice(n, size=n_planted, replace=False)
    others = np.setdiff1d(np.arange(n), copies)
    bases = rng.choice(others, size=n_planted, replace=True)
    flips = rng.integers(1, max_distance + 1, size=n_planted)
    for c, b, f in zip(copies, bases, flips, strict=True):
        bits = rng.choice(64, size=f, replace=False)
        mask = np.uint64(sum(1 << int(x) for x in bits))
        hashes[c] = hashes[b] ^ mask
    return hashes, copies, bases


def brute_force_pairs(hashes: np.ndarray, max_distance: int, block: int = 1024) -> int:
    """All-pairs scan, vectorised in row blocks: the baseline an index must beat."""
    found = 0
    n = hashes.size
    for lo in range(0, n, block):
        rows = hashes[lo : lo + block]
        dist = np.bitwise_count(rows[:, None] ^ hashes[None, lo:])
        close = dist <= max_distance
        # keep j > i only (upper triangle of this block against the rest)
        close &= np.arange(n - lo)[None, :] > np.arange(rows.size)[:, None]
        found += int(close.sum())
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--planted", type=float, default=0.01, help="fraction of near copies")
    parser.add_argument("--max-distance", type=int, default=6)
    parser.add_argument("--subset", type=int, default=20_000, help="brute-force subset size")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--joint",
        action="store_true",
        help="also time find_hash_duplicates with random dHashes (pHash + dHash crop rule)",
    )
    parser.add_argument(
        "--compare-plans",
        action="store_true",
        help="also time the index with 0..3 extra chunks (0 = max_distance+1 chunks)",
    )
    args = parser.parse_args()
    d = args.max_distance

    hashes, copies, bases = make_hashes(args.n, args.planted, d, args.seed)
    ids = [f"img/{i:07d}.jpg" for i in range(args.n)]
    content = [f"{i:032x}" for i in range(args.n)]
    phash_hex = [f"{int(x):016x}" for x in hashes]
    s = dupes._plan_extra_chunks(np.unique(hashes).size, d)
    print(
        f"n={args.n:,} planted={copies.size:,} max_distance={d} "
        f"plan: {d + 1 + s} chunks, keys of {s + 1} chunk(s)"
    )

    t0 = time.perf_counter()
    table = find_hash_duplicates(ids, content, phash_hex, max_distance=d)
    t_index = time.perf_counter() - t0
    summary = dupes.summarize_duplicates(table)
    print(
        f"find_hash_duplicates: {t_index:.2f} s  -> {summary['groups']:,} groups, "
        f"{summary['images_in_groups']:,} images"
    )

    # Every planted copy must share a group with its base.
    group_of = dict(
        zip(
            pc.cast(table.column("image_id"), "string").to_pylist(),
            table.column("group_id").to_pylist(),
            strict=True,
        )
    )
    missed = sum(
        1
        for c, b in zip(copies, bases, strict=True)
        if group_of.get(ids[c]) is None or group_of.get(ids[c]) != group_of.get(ids[b])
    )
    print(f"planted pairs missed: {missed} of {copies.size:,}")

    if args.joint:
        rng = np.random.default_rng(args.seed + 1)
        dh = rng.integers(0, 2**64, size=args.n, dtype=np.uint64)
        dh[copies] = dh[bases]  # planted copies: same dHash, so the joint rule links them too
        dhash_hex = [f"{int(x):016x}" for x in dh]
        k, tables = hash_index.plan_joint(args.n, dupes.DEFAULT_MAX_JOINT_DISTANCE)
        t0 = time.perf_counter()
        joint = find_hash_duplicates(ids, content, phash_hex, max_distance=d, dhashes=dhash_hex)
        print(
            f"with dhashes (joint rule, LSH {tables} tables of {k} bits): "
            f"{time.perf_counter() - t0:.2f} s -> {joint.num_rows:,} images in groups"
        )

    m = min(args.subset, args.n)
    sub = hashes[:m]
    t0 = time.perf_counter()
    pairs = brute_force_pairs(sub, d)
    t_brute_sub = time.perf_counter() - t0
    t_brute = t_brute_sub * (args.n / m) ** 2
    print(
        f"brute force on {m:,}: {t_brute_sub:.2f} s ({pairs} pairs) "
        f"-> estimated {t_brute:,.0f} s ({t_brute / 3600:.2f} h) for {args.n:,}"
    )
    print(f"speed-up: {t_brute / t_index:,.0f}x")

    if args.compare_plans:
        uniq = np.unique(hashes)
        for extra in range(4):
            t0 = time.perf_counter()
            dupes._near_components(uniq, d, extra_chunks=extra)
            print(
                f"  near search, {d + 1 + extra} chunks / keys of {extra + 1}: "
                f"{time.perf_counter() - t0:.2f} s"
            )


if __name__ == "__main__":
    main()
