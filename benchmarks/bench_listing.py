"""Listing cost on Drive-like and S3-like storage: scan of 1M image objects, done-set, manifest.

Everything goes through the latency store (``exoray.storage.latency``: per-call sleeps and
counters around a real filesystem), so the printed request counts are the real code path's and
the times are what those requests cost at the profile's latency (sleeps: the machine's load
barely matters).

* **scan**: ``exoray.image.scan.scan_uri`` (the manifest's listing of an object-store image root)
  on a synthetic tree of ``--objects`` keys in ``--folders`` folders (the tree is generated, not
  stored; only the listing calls are served). Before: scan_uri's one recursive listing (pages
  of 1000 keys, one after another). After: the same scan with that listing done by
  ``exoray.storage.listing.list_tree`` (by prefix, 16 threads).
* **done-set**: ``exoray.engine.done.done_keys`` over ``--parts`` real parts of ``--rows`` rows
  (written once into the workdir), with ``parts.READ_THREADS`` 16 (as shipped) and 64.
* **manifest**: ``exoray.image.manifest.read_manifest`` of a manifest of the same size.
"""

from __future__ import annotations

import os
import time
from types import SimpleNamespace
from unittest import mock

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
from _common import bench_parser, machine, prepare_workdir
from bench_resume import make_ids

from exoray.engine.done import done_keys
from exoray.image import scan
from exoray.image.manifest import MANIFEST_SCHEMA, PRESENT, read_manifest, write_manifest
from exoray.storage import layout, parts
from exoray.storage.latency import PROFILES, LatencyHandler, wrap
from exoray.storage.listing import list_tree
from exoray.storage.parts import write_part
from exoray.storage.store import Store


class SyntheticTree(pafs.FileSystemHandler):
    """``bucket/root/f0000/img_000000.jpg`` ...: listings answered from arithmetic, no storage."""

    def __init__(self, objects: int, folders: int, root: str = "bucket/images") -> None:
        self.objects, self.folders, self.root = objects, folders, root
        self.per_folder = -(-objects // folders)

    def _folder(self, i: int) -> str:
        return f"{self.root}/f{i:04d}"

    def _files(self, i: int) -> list[pafs.FileInfo]:
        lo, hi = i * self.per_folder, min(self.objects, (i + 1) * self.per_folder)
        folder = self._folder(i)
        return [pafs.FileInfo(f"{folder}/img_{k:07d}.jpg", pafs.FileType.File, size=250_000,
                              mtime_ns=1_700_000_000_000_000_000 + k) for k in range(lo, hi)]

    def get_file_info_selector(self, selector):
        base = selector.base_dir.rstrip("/")
        if base == self.root:
            dirs = [pafs.FileInfo(self._folder(i), pafs.FileType.Directory)
                    for i in range(self.folders)]
            if not selector.recursive:
                return dirs
            return dirs + [f for i in range(self.folders) for f in self._files(i)]
        return self._files(int(base.rsplit("/f", 1)[1]))

    def get_file_info(self, paths):
        return [pafs.FileInfo(p, pafs.FileType.Directory) for p in paths]

    def get_type_name(self):
        return "synthetic"

    def normalize_path(self, path):
        return path

    def _no(self, *a, **k):
        raise OSError("the synthetic tree is read-only")

    create_dir = delete_dir = delete_dir_contents = delete_root_dir_contents = delete_file = _no
    move = copy_file = open_input_stream = open_input_file = _no
    open_output_stream = open_append_stream = _no


class PrefixListing(LatencyHandler):
    """The wrapped tree, with a recursive listing served by list_tree (the proposed scan)."""

    def __init__(self, wrapped: pafs.FileSystem, handler: LatencyHandler) -> None:
        super().__init__(handler.inner, handler.profile, handler.counter)
        self.wrapped = wrapped

    def get_file_info_selector(self, selector):
        if selector.recursive:
            return list_tree(self.wrapped, selector.base_dir)
        return super().get_file_info_selector(selector)


def timed_scan(fs: pafs.FileSystem) -> tuple[float, int]:
    fake = SimpleNamespace(FileSystem=SimpleNamespace(from_uri=lambda uri: (fs, "bucket/images")),
                           FileSelector=pafs.FileSelector, FileType=pafs.FileType)
    with mock.patch.object(scan, "pafs", fake):  # scan_uri's own code, on our filesystem
        started = time.perf_counter()
        result = scan.scan_uri("s3://bucket/images")
    return time.perf_counter() - started, len(result.files)


def bench_scan(args, profile_name: str) -> None:
    profile = PROFILES[profile_name]
    tree = pafs.PyFileSystem(SyntheticTree(args.objects, args.folders))
    before_fs, counter = wrap(tree, profile)
    seconds, n = timed_scan(before_fs)
    calls = counter.snapshot()
    print(f"  scan {profile_name:5s} one recursive listing: {seconds:7.2f}s  {n:,} files, "
          f"{calls.get('list', 0)} listings, {calls.get('list_page', 0)} pages", flush=True)
    counter.reset()
    after_fs = pafs.PyFileSystem(PrefixListing(before_fs, before_fs.handler))
    seconds2, n2 = timed_scan(after_fs)
    calls = counter.snapshot()
    assert n2 == n, (n, n2)
    print(f"  scan {profile_name:5s} by prefix (list_tree):   {seconds2:7.2f}s  {n2:,} files, "
          f"{calls.get('list', 0)} listings, {calls.get('list_page', 0)} pages  "
          f"-> {seconds / seconds2:.1f}x", flush=True)


def ensure_base(args) -> str:
    """A BASE with ``--parts`` feature parts and a manifest of the same size (built once)."""
    base = os.path.join(args.workdir, f"listing-base-{args.parts}x{args.rows}")
    store = Store(base)
    if store.exists(layout.MANIFEST):
        return base
    n = args.parts * args.rows
    ids, relpaths, fps = make_ids(n, args.seed)
    started = time.perf_counter()
    for p in range(args.parts):
        lo, hi = p * args.rows, (p + 1) * args.rows
        write_part(store, layout.FEATURES, pa.table({
            "image_id": ids[lo:hi], "relpath": relpaths[lo:hi], "fingerprint": fps[lo:hi],
            "width": pa.array(np.full(hi - lo, 640), pa.int32())}),
            run_id="bench", key=("image_id", "fingerprint"))
    ts = pa.scalar(1_700_000_000_000, MANIFEST_SCHEMA.field("first_seen").type).as_py()
    write_manifest(store, pa.table({
        "image_id": ids, "relpath": relpaths, "bytes": np.full(n, 1_000_000),
        "mtime_ns": np.zeros(n, np.int64), "ext": ["jpg"] * n, "fingerprint": fps,
        "status": [PRESENT] * n, "first_seen": [ts] * n, "last_changed": [ts] * n},
        schema=MANIFEST_SCHEMA), "s3://bucket/images")
    print(f"  (built the BASE in {time.perf_counter() - started:.0f}s, not counted)", flush=True)
    return base


def bench_done(base: str, profile_name: str, n: int) -> None:
    for threads in (16, 64):
        store = Store(f"latency+file://{base}?profile={profile_name}")
        with mock.patch.object(parts, "READ_THREADS", threads):
            started = time.perf_counter()
            done = done_keys(store, layout.FEATURES)
            seconds = time.perf_counter() - started
        calls = store.counter.snapshot()
        assert len(done) == n
        print(f"  done-set {profile_name:5s} {threads:2d} threads: {seconds:7.2f}s  "
              f"{calls.get('list', 0)} listing, {calls.get('open', 0)} opens, "
              f"{store.counter.bytes_read / 1e6:.0f} MB read", flush=True)
    store = Store(f"latency+file://{base}?profile={profile_name}")
    started = time.perf_counter()
    rows = read_manifest(store).num_rows
    calls = store.counter.snapshot()
    print(f"  manifest {profile_name:5s}: {time.perf_counter() - started:7.2f}s  {rows:,} rows, "
          f"{calls.get('open', 0)} open(s), {calls.get('stat', 0)} lookups, "
          f"{store.counter.bytes_read / 1e6:.0f} MB read", flush=True)


def main() -> None:
    parser = bench_parser(__doc__)
    parser.add_argument("--objects", type=int, default=1_000_000)
    parser.add_argument("--folders", type=int, default=1000)
    parser.add_argument("--parts", type=int, default=1000)
    parser.add_argument("--rows", type=int, default=1000)
    parser.add_argument("--profiles", nargs="+", default=["s3", "drive"], choices=list(PROFILES))
    parser.add_argument("--skip", nargs="*", default=[], choices=["scan", "done"])
    args = parser.parse_args()
    prepare_workdir(args)
    print(f"machine: {machine()}")
    for name in args.profiles:
        p = PROFILES[name]
        print(f"profile {name}: open {p.open_ms} ms, list {p.list_ms} ms per {p.page} entries, "
              f"stat {p.stat_ms} ms, rename {p.rename_ms} ms, {p.mb_s or 'unlimited'} MB/s")
    if "scan" not in args.skip:
        print(f"scan of {args.objects:,} image objects in {args.folders:,} folders:")
        for name in args.profiles:
            bench_scan(args, name)
    if "done" not in args.skip:
        base = ensure_base(args)
        print(f"done-set and manifest of {args.parts * args.rows:,} images "
              f"({args.parts} parts of {args.rows}):")
        for name in ["none", *args.profiles]:
            bench_done(base, name, args.parts * args.rows)


if __name__ == "__main__":
    main()
