"""Benchmark the resume check: which of 1M manifest images a phase has already done.

Writes ``--parts`` x ``--rows`` feature rows (image_id, fingerprint and a few feature columns)
through ``exoray.storage.parts.write_part`` into a temporary BASE, plus a manifest of the same size in
which ``--changed`` images got a new fingerprint, then times the calls ``pipelines.features.todo``
makes: ``done_keys`` (list + read the parts, build the key set) and ``pending_mask`` (and the whole
``todo`` once, manifest read and error table included).

    python benchmarks/bench_resume.py                 # 1,000 parts x 1,000 rows (goal < 3 s)
"""

from __future__ import annotations

import shutil
import tempfile
import time

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from _common import bench_parser, machine, prepare_workdir, timed, wait_for_quiet

from exoray.engine.done import done_keys, pending_mask, present_images
from exoray.image.ids import fingerprint
from exoray.image.manifest import MANIFEST_SCHEMA, PRESENT, write_manifest
from exoray.storage import layout
from exoray.storage.parts import write_part
from exoray.storage.store import Store


def make_ids(n: int, seed: int) -> tuple[list[str], list[str], list[str]]:
    """image_id (16 hex chars like exoray.image.ids.image_id), relpath, fingerprint for n images."""
    rng = np.random.default_rng(seed)
    ids = [f"{x:016x}" for x in rng.integers(0, 2**63, n, dtype=np.int64).tolist()]
    relpaths = [f"photos/{i // 1000:04d}/IMG_{i:07d}.jpg" for i in range(n)]
    sizes = rng.integers(200_000, 5_000_000, n).tolist()
    mtimes = (1_700_000_000_000_000_000 + rng.integers(0, 10**16, n)).tolist()
    fps = [fingerprint(s, m) for s, m in zip(sizes, mtimes, strict=True)]
    return ids, relpaths, fps


def main() -> None:
    parser = bench_parser(__doc__, wait_quiet=300.0)
    parser.add_argument("--parts", type=int, default=1000)
    parser.add_argument("--rows", type=int, default=1000, help="rows per part")
    parser.add_argument("--changed", type=int, default=10_000,
                        help="manifest images whose fingerprint changed (must be redone)")
    parser.add_argument("--repeat", type=int, default=3, help="timed repetitions (best is kept)")
    args = parser.parse_args()
    prepare_workdir(args)
    n = args.parts * args.rows
    print(f"machine: {machine()}")
    base = tempfile.mkdtemp(prefix="resume-base-", dir=args.workdir)
    try:
        store = Store(base)
        ids, relpaths, fps = make_ids(n, args.seed)
        rng = np.random.default_rng(args.seed + 1)
        print(f"setup: {args.parts} parts x {args.rows} rows = {n:,} feature rows, "
              f"manifest of {n:,} ({args.changed:,} changed)", flush=True)
        started = time.perf_counter()
        for p in range(args.parts):
            lo, hi = p * args.rows, (p + 1) * args.rows
            table = pa.table({
                "image_id": pa.array(ids[lo:hi], pa.string()),
                "relpath": pa.array(relpaths[lo:hi], pa.string()),
                "fingerprint": pa.array(fps[lo:hi], pa.string()),
                "width": pa.array(rng.integers(64, 6000, args.rows), pa.int32()),
                "height": pa.array(rng.integers(64, 6000, args.rows), pa.int32()),
                "brightness": pa.array(rng.random(args.rows, np.float32)),
                "sharpness": pa.array(rng.random(args.rows, np.float32) * 1000),
                "phash": pa.array([f"{x:016x}" for x in
                                   rng.integers(0, 2**63, args.rows, dtype=np.int64).tolist()]),
                "run_id": pa.array(["benchrun"] * args.rows, pa.string()),
            })
            write_part(store, layout.FEATURES, table, run_id="benchrun",
                       key=("image_id", "fingerprint"))
        print(f"  wrote parts in {time.perf_counter() - started:.1f}s (not counted)", flush=True)

        changed = rng.choice(n, args.changed, replace=False)
        manifest_fps = list(fps)
        for i in changed.tolist():
            manifest_fps[i] = manifest_fps[i] + "x"
        now = pa.scalar(1_700_000_000_000, MANIFEST_SCHEMA.field("first_seen").type)
        manifest = pa.table({
            "image_id": pa.array(ids, pa.string()),
            "relpath": pa.array(relpaths, pa.string()),
            "bytes": pa.array(np.full(n, 1_000_000), pa.int64()),
            "mtime_ns": pa.array(np.zeros(n, np.int64), pa.int64()),
            "ext": pa.array(["jpg"] * n, pa.string()),
            "fingerprint": pa.array(manifest_fps, pa.string()),
            "status": pa.array([PRESENT] * n, pa.string()),
            "first_seen": pa.array([now.as_py()] * n, MANIFEST_SCHEMA.field("first_seen").type),
            "last_changed": pa.array([now.as_py()] * n, MANIFEST_SCHEMA.field("last_changed").type),
        }, schema=MANIFEST_SCHEMA)
        write_manifest(store, manifest, "/nonexistent/images")
        images = present_images(manifest)

        best: dict[str, float] = {}
        for rep in range(args.repeat):
            print(f"run {rep + 1}/{args.repeat}:")
            wait_for_quiet(args.wait_quiet)
            t: dict[str, float] = {}
            with timed("done_keys(store, features/global)", t):
                done = done_keys(store, layout.FEATURES)
            with timed("pending_mask(images, done)", t):
                mask = pending_mask(images, done)
            t["done_keys + pending_mask"] = t["done_keys(store, features/global)"] + t[
                "pending_mask(images, done)"]
            pending = int(pc.sum(mask).as_py())
            assert len(done) == n, (len(done), n)
            assert pending == args.changed, (pending, args.changed)
            from pipelines.features import todo

            with timed("pipelines.features.todo(store) (manifest read too)", t):
                todo_rows = todo(store).num_rows
            assert todo_rows == args.changed, todo_rows
            for k, v in t.items():
                best[k] = min(best.get(k, float("inf")), v)
        print(f"\nbest of {args.repeat}: {n:,} done ids, {args.changed:,} pending found")
        for k, v in best.items():
            print(f"  {k:<52s} {v:9.2f} s" + ("   (goal < 3 s)" if k.startswith("done_keys +")
                                               else ""))
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
