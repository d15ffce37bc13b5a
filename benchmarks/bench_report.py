"""exoray report on a large collection: how long the report takes, and where the time goes.

The collection's columns are synthesised at ``--n`` images (default 100,000): a manifest whose
files are hard links to ``--real`` real generated images (so every thumbnail the report makes
decodes a real file), Phase II rows taken from those real images with their hashes made unique,
duplicate groups from ``exoray dupes`` itself, and clustered unit embeddings. Then the report is
built twice: cold (it makes the thumbnails it shows) and warm (it reuses them). The baseline in
the same run is reading the Phase II columns alone (the floor of any report), so the ratios say
what the report adds on top of one read of the features.

    .venv/bin/python benchmarks/bench_report.py [--n 100000] [--real 600]
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks._common import bench_env  # noqa: E402

DIM = 64
CENTRES = 20


def build_base(base: Path, n: int, real: int, seed: int = 0) -> None:
    from exoray.dev.synth import make_image_set
    from exoray.engine.schemas import EMBEDDINGS_KEY, EMBEDDINGS_SCHEMA, FEATURES_SCHEMA
    from exoray.image.cheap_features import compute_features
    from exoray.image.ids import fingerprint, image_id
    from exoray.image.manifest import MANIFEST_SCHEMA, PRESENT, write_manifest
    from exoray.index.embeddings import remember_model
    from exoray.storage import layout
    from exoray.storage.parts import write_part
    from exoray.storage.store import Store

    rng = np.random.default_rng(seed)
    pool_dir = base.parent / f"pool-{real}"
    if not (pool_dir / "truth.json").exists():
        make_image_set(pool_dir, n=real, seed=seed, corrupt=False, max_megapixels=1.0)
    pool = sorted(p for p in pool_dir.rglob("*") if p.is_file() and p.name != "truth.json")
    feats = [compute_features(p.read_bytes(), name=p.name) for p in pool]
    images = base / "data" / "images"
    rels, fps = [], []
    for i in range(n):
        rel = f"c{i // 1000:03d}/img_{i:07d}{pool[i % len(pool)].suffix}"
        dest = images / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.link(pool[i % len(pool)], dest)
        st = dest.stat()
        rels.append(rel)
        fps.append(fingerprint(st.st_size, st.st_mtime_ns))
    ids = [image_id(r) for r in rels]
    import datetime as dt

    now = pa.scalar(dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc),
                    MANIFEST_SCHEMA.field("first_seen").type)
    manifest = pa.table({
        "image_id": ids, "relpath": rels,
        "bytes": [pool[i % len(pool)].stat().st_size for i in range(n)],
        "mtime_ns": [0] * n, "ext": [r.rsplit(".", 1)[1] for r in rels], "fingerprint": fps,
        "status": [PRESENT] * n, "first_seen": pa.array([now.as_py()] * n, now.type),
        "last_changed": pa.array([now.as_py()] * n, now.type)}, schema=MANIFEST_SCHEMA)
    store = Store(str(base))
    write_manifest(store, manifest, str(images))
    rows = []
    for i in range(n):
        row = dict(feats[i % len(feats)])
        # Unique hashes, except a few real duplicates: 1 % exact copies of their neighbour.
        row["content_hash"] = f"{i:032x}" if rng.random() > 0.01 else f"{max(i - 1, 0):032x}"
        row["phash"] = f"{int(rng.integers(0, 2**63)):016x}"
        row["dhash"] = f"{int(rng.integers(0, 2**63)):016x}"
        row.update(image_id=ids[i], relpath=rels[i], fingerprint=fps[i], run_id="bench",
                   exoray_version="bench")
        rows.append(row)
    table = pa.Table.from_pylist(rows, schema=FEATURES_SCHEMA)
    for start in range(0, n, 5000):
        write_part(store, layout.FEATURES, table.slice(start, 5000), run_id="bench",
                   key=("image_id", "fingerprint"), schema=FEATURES_SCHEMA)
    centres = rng.normal(size=(CENTRES, DIM))
    vectors = centres[rng.integers(0, CENTRES, n)] + 0.4 * rng.normal(size=(n, DIM))
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    folder = remember_model(store, "clip", "bench-clip", {}, DIM)
    flat = pa.array(vectors.astype(np.float16).ravel(), pa.float16())
    emb = pa.table({"image_id": ids, "fingerprint": fps, "model_id": ["bench-clip"] * n,
                    "weights_hash": ["x"] * n, "dim": pa.array([DIM] * n, pa.int32()),
                    "vector": pa.FixedSizeListArray.from_arrays(flat, DIM),
                    "run_id": ["bench"] * n})
    for start in range(0, n, 20000):
        write_part(store, folder, emb.slice(start, 20000), run_id="bench", key=EMBEDDINGS_KEY,
                   schema=EMBEDDINGS_SCHEMA)


def main() -> None:
    import argparse

    bench_env()
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=100_000, help="images (columns) in the BASE")
    parser.add_argument("--real", type=int, default=600, help="real image files behind them")
    parser.add_argument("--workdir", default=os.path.join(os.environ.get("TMPDIR", "/tmp"),
                                                          "exoray-bench-report"))
    args = parser.parse_args()
    import shutil

    from exoray.engine.readers import read_features
    from exoray.report import build_report
    from pipelines import dupes

    base = Path(args.workdir) / f"base-{args.n}"
    shutil.rmtree(base, ignore_errors=True)
    t0 = time.perf_counter()
    build_base(base, args.n, args.real)
    print(f"synthesised BASE of {args.n} images over {args.real} real files in "
          f"{time.perf_counter() - t0:.1f}s")
    t0 = time.perf_counter()
    summary = dupes.run(base)
    print(f"exoray dupes on {args.n} hashes: {time.perf_counter() - t0:.1f}s, "
          f"{summary['groups']} groups")
    t0 = time.perf_counter()
    read_features(base)
    floor = time.perf_counter() - t0
    print(f"baseline: read_features of {args.n} images {floor:.2f}s")
    for label in ("cold (makes its thumbnails)", "warm (reuses them)"):
        result = build_report(base)
        print(f"report {label}: {result.seconds:.1f}s = {result.seconds / floor:.0f}x the "
              f"features read; {result.images_shown} images shown, {result.thumbnails_made} "
              f"thumbnails made, {result.sheets} sheets")
        print("   " + ", ".join(f"{k} {v:.1f}s" for k, v in result.timings.items()))
    out = base / "reports" / "latest"
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    print(f"report folder: {len(result.files)} files, {size / 1e6:.1f} MB")


if __name__ == "__main__":
    main()
