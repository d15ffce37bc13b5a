"""Phase I: scan an image root into ``manifests/images.parquet``, incrementally.

One row per image ever seen: new files are added, changed files (size or mtime) get a new
fingerprint so later phases re-queue them, vanished files are marked ``deleted`` (never erased, so
their outputs keep their meaning).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from exoray.image.ids import fingerprint, image_id, normalize_relpath
from exoray.storage import layout
from exoray.storage.staging import staging_file
from exoray.storage.store import Store, is_uri

IMAGE_EXTENSIONS = frozenset({"jpg", "jpeg", "png", "webp", "bmp", "gif", "tif", "tiff"})
PRESENT, DELETED = "present", "deleted"

MANIFEST_SCHEMA = pa.schema(
    [
        ("image_id", pa.string()),
        ("relpath", pa.string()),
        ("bytes", pa.int64()),
        ("mtime_ns", pa.int64()),
        ("ext", pa.string()),
        ("fingerprint", pa.string()),
        ("status", pa.string()),
        ("first_seen", pa.timestamp("ms", tz="UTC")),
        ("last_changed", pa.timestamp("ms", tz="UTC")),
    ]
)


@dataclass(frozen=True)
class ScannedFile:
    relpath: str
    size: int
    mtime_ns: int


@dataclass(frozen=True)
class ScanSummary:
    root: str
    total: int
    present: int
    new: int
    changed: int
    deleted: int
    restored: int
    seconds: float

    def __str__(self) -> str:
        return (
            f"manifest: {self.present} images present ({self.total} known) under {self.root}; "
            f"{self.new} new, {self.changed} changed, {self.deleted} newly deleted, "
            f"{self.restored} restored; scanned in {self.seconds:.1f}s"
        )


def image_extension(name: str) -> str | None:
    """Lower-case extension if ``name`` is an image file name we scan, else None."""
    if "." not in name:
        return None
    ext = name.rsplit(".", 1)[1].lower()
    return ext if ext in IMAGE_EXTENSIONS else None


def _skip_name(name: str) -> bool:
    # Hidden files/folders, AppleDouble "._x.jpg" (also hidden), editor/OS droppings.
    return name.startswith(".")


def scan_local(root: str) -> Iterator[ScannedFile]:
    """Walk a local/FUSE folder with scandir (one stat per file), following the skip rules.

    Symlinks are followed only when they resolve inside ``root``; each real folder is visited once
    so symlink loops cannot recurse forever.
    """
    real_root = os.path.realpath(root)
    seen_dirs = {real_root}
    stack = [("", root)]
    while stack:
        prefix, folder = stack.pop()
        try:
            it = os.scandir(folder)
        except OSError:
            continue  # unreadable folder (permissions, vanished while scanning)
        with it:
            for entry in it:
                name = entry.name
                if _skip_name(name):
                    continue
                try:
                    is_link = entry.is_symlink()
                    if is_link:
                        target = os.path.realpath(entry.path)
                        if not (target == real_root or target.startswith(real_root + os.sep)):
                            continue
                    if entry.is_dir():
                        if image_extension(name) is not None:
                            continue  # e.g. a "photo.jpg/" bundle folder
                        if is_link:
                            real = os.path.realpath(entry.path)
                            if real in seen_dirs:
                                continue  # a second way into a folder already walked
                            seen_dirs.add(real)
                        stack.append((f"{prefix}{name}/", entry.path))
                        continue
                    if image_extension(name) is None or not entry.is_file():
                        continue
                    st = entry.stat()
                except OSError:
                    continue  # broken symlink or file removed mid-scan
                yield ScannedFile(f"{prefix}{name}", st.st_size, st.st_mtime_ns)


def scan_uri(uri: str) -> Iterator[ScannedFile]:
    """List an object-store/URI root with one recursive listing, same skip rules."""
    fs, base = pafs.FileSystem.from_uri(uri)
    base = base.rstrip("/")
    for info in fs.get_file_info(pafs.FileSelector(base, allow_not_found=False, recursive=True)):
        if info.type != pafs.FileType.File:
            continue
        rel = info.path[len(base) :].lstrip("/")
        pieces = rel.split("/")
        if any(_skip_name(p) for p in pieces) or image_extension(pieces[-1]) is None:
            continue
        if any(image_extension(p) is not None for p in pieces[:-1]):
            continue
        mtime_ns = int(info.mtime_ns) if info.mtime_ns is not None else 0
        yield ScannedFile(rel, int(info.size or 0), mtime_ns)


def scan_root(root: str) -> list[ScannedFile]:
    if is_uri(root):
        return list(scan_uri(root))
    if not os.path.isdir(root):
        raise FileNotFoundError(
            f"image folder {root!r} does not exist; pass --images DIR pointing at your images"
        )
    return list(scan_local(root))


def _scan_table(files: list[ScannedFile], now: pa.Scalar) -> pa.Table:
    relpaths = [normalize_relpath(f.relpath) for f in files]
    ids = [image_id(r) for r in relpaths]
    if len(set(ids)) != len(ids):
        dup = _first_duplicate(ids, relpaths)
        raise ValueError(
            f"two files map to the same image id ({dup}); rename one of them "
            "(paths differing only in Unicode normalisation are the same image)"
        )
    sizes = [f.size for f in files]
    mtimes = [f.mtime_ns for f in files]
    n = len(files)
    return pa.table(
        {
            "image_id": pa.array(ids, pa.string()),
            "relpath": pa.array(relpaths, pa.string()),
            "bytes": pa.array(sizes, pa.int64()),
            "mtime_ns": pa.array(mtimes, pa.int64()),
            "ext": pa.array([r.rsplit(".", 1)[1].lower() for r in relpaths], pa.string()),
            "fingerprint": pa.array([fingerprint(s, m) for s, m in zip(sizes, mtimes, strict=True)]),
            "status": pa.array([PRESENT] * n, pa.string()),
            "first_seen": pa.array([now.as_py()] * n, MANIFEST_SCHEMA.field("first_seen").type),
            "last_changed": pa.array([now.as_py()] * n, MANIFEST_SCHEMA.field("last_changed").type),
        },
        schema=MANIFEST_SCHEMA,
    )


def _first_duplicate(ids: list[str], relpaths: list[str]) -> str:
    seen: dict[str, str] = {}
    for i, r in zip(ids, relpaths, strict=True):
        if i in seen:
            return f"{seen[i]!r} and {r!r}"
        seen[i] = r
    return "?"


def read_manifest(store: Store) -> pa.Table | None:
    """The current manifest, or None before the first scan."""
    if not store.exists(layout.MANIFEST):
        return None
    with store.open_input_file(layout.MANIFEST) as f:
        return pq.read_table(f)


def manifest_root(store: Store) -> str | None:
    """The image root the manifest was last built from."""
    if not store.exists(layout.MANIFEST):
        return None
    with store.open_input_file(layout.MANIFEST) as f:
        meta = pq.ParquetFile(f).schema_arrow.metadata or {}
    root = meta.get(b"exoray.root")
    return root.decode() if root else None


def merge_scan(old: pa.Table | None, scanned: pa.Table) -> tuple[pa.Table, dict[str, int]]:
    """Combine the previous manifest with a fresh scan (pure; see module docstring)."""
    if old is None or old.num_rows == 0:
        return scanned, {"new": scanned.num_rows, "changed": 0, "deleted": 0, "restored": 0}
    old = old.select(MANIFEST_SCHEMA.names).cast(MANIFEST_SCHEMA)
    old_idx = {iid: i for i, iid in enumerate(old["image_id"].to_pylist())}
    old_fp = old["fingerprint"].to_pylist()
    old_status = old["status"].to_pylist()
    old_first = old["first_seen"]
    old_changed = old["last_changed"]
    new_ids = scanned["image_id"].to_pylist()
    new_fp = scanned["fingerprint"].to_pylist()

    first_seen = scanned["first_seen"].to_pylist()
    last_changed = scanned["last_changed"].to_pylist()
    counts = {"new": 0, "changed": 0, "deleted": 0, "restored": 0}
    for j, iid in enumerate(new_ids):
        i = old_idx.get(iid)
        if i is None:
            counts["new"] += 1
            continue
        first_seen[j] = old_first[i].as_py()
        if old_fp[i] != new_fp[j]:
            counts["changed"] += 1
        else:
            last_changed[j] = old_changed[i].as_py()
        if old_status[i] == DELETED:
            counts["restored"] += 1
    present = scanned.set_column(
        scanned.schema.get_field_index("first_seen"), "first_seen",
        pa.array(first_seen, MANIFEST_SCHEMA.field("first_seen").type),
    ).set_column(
        scanned.schema.get_field_index("last_changed"), "last_changed",
        pa.array(last_changed, MANIFEST_SCHEMA.field("last_changed").type),
    )
    gone_mask = pc.invert(pc.is_in(old["image_id"], value_set=scanned["image_id"]))
    gone = old.filter(gone_mask)
    if gone.num_rows:
        newly = pc.sum(pc.equal(gone["status"], PRESENT)).as_py() or 0
        counts["deleted"] = int(newly)
        now = pa.scalar(int(time.time() * 1000), MANIFEST_SCHEMA.field("last_changed").type)
        changed_col = pc.if_else(pc.equal(gone["status"], PRESENT), now, gone["last_changed"])
        gone = gone.set_column(gone.schema.get_field_index("status"), "status",
                               pa.array([DELETED] * gone.num_rows, pa.string()))
        gone = gone.set_column(gone.schema.get_field_index("last_changed"), "last_changed",
                               changed_col)
    merged = pa.concat_tables([present, gone]).sort_by("relpath")
    return merged, counts


def write_manifest(store: Store, table: pa.Table, root: str) -> None:
    """Publish the manifest atomically, recording the scanned root in the schema metadata."""
    meta = dict(table.schema.metadata or {})
    meta[b"exoray.root"] = root.encode()
    table = table.replace_schema_metadata(meta)
    with staging_file(suffix=".parquet") as local:
        pq.write_table(table, local, compression="zstd")
        if pq.ParquetFile(local).metadata.num_rows != table.num_rows:
            raise OSError("the staged manifest did not read back; check local disk space")
        store.publish_file(local, layout.MANIFEST)


def resolve_image_root(store: Store, images: str | None) -> str:
    """``--images`` if given, else the root recorded in the manifest, else BASE/data/images."""
    if images:
        return images if is_uri(images) else os.path.abspath(os.path.expanduser(images))
    recorded = manifest_root(store)
    if recorded:
        return recorded
    return store.uri(layout.DEFAULT_IMAGES)


def build_manifest(store: Store, images: str | None = None) -> ScanSummary:
    """Scan the image root and publish the merged manifest (Phase I's whole job)."""
    started = time.perf_counter()
    root = resolve_image_root(store, images)
    files = scan_root(root)
    now = pa.scalar(int(time.time() * 1000), MANIFEST_SCHEMA.field("first_seen").type)
    scanned = _scan_table(files, now)
    merged, counts = merge_scan(read_manifest(store), scanned)
    write_manifest(store, merged, root)
    present = int(pc.sum(pc.equal(merged["status"], PRESENT)).as_py() or 0)
    return ScanSummary(root=root, total=merged.num_rows, present=present,
                       seconds=time.perf_counter() - started, **counts)
