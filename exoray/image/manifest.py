"""Phase I: scan an image root into ``manifests/images.parquet``, incrementally.

One row per image ever seen: new files are added, changed files (size or mtime) get a new
fingerprint so later phases re-queue them, vanished files are marked ``deleted`` (never erased, so
their outputs keep their meaning). Images under a folder that could not be listed this time keep
their row as it was: "could not look" is not "gone". What the scan skipped, and why, goes to
``manifests/skipped.parquet`` (see :mod:`exoray.image.scan` for the rules and reasons and
:mod:`exoray.image.extensions` for the scanned extensions and ``EXORAY_EXTENSIONS``).
"""

from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from exoray.image.extensions import missing_decoder_hint
from exoray.image.ids import fingerprint, image_id, normalize_relpath
from exoray.image.scan import (
    LOOP,
    UNKNOWN_EXTENSION,
    UNLISTABLE,
    ScannedFile,
    ScanResult,
    Skipped,
    scan_root,
)
from exoray.storage import layout
from exoray.storage.staging import staging_file
from exoray.storage.store import Store, is_uri

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


SKIPPED = "manifests/skipped.parquet"
SKIPPED_SCHEMA = pa.schema(
    [("relpath", pa.string()), ("reason", pa.string()), ("detail", pa.string())]
)
MAX_EXAMPLES = 5  # skipped relpaths kept per reason in the summary (all are in skipped.parquet)


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
    kept: int = 0  # known images under unlistable folders, left as they were
    skipped: Mapping[str, int] = field(default_factory=dict)  # reason -> count
    skipped_examples: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    skipped_extensions: Mapping[str, int] = field(default_factory=dict)  # unknown ext -> count
    unlistable: tuple[str, ...] = ()  # folders (relpath/) that could not be listed
    loops: tuple[str, ...] = ()  # symlinked folders leading back to an ancestor

    def __str__(self) -> str:
        line = (
            f"manifest: {self.present} images present ({self.total} known) under {self.root}; "
            f"{self.new} new, {self.changed} changed, {self.deleted} newly deleted, "
            f"{self.restored} restored; scanned in {self.seconds:.1f}s"
        )
        if self.skipped:
            parts = []
            for reason, n in sorted(self.skipped.items(), key=lambda kv: (-kv[1], kv[0])):
                text = f"{reason} {n}"
                if reason == UNKNOWN_EXTENSION and self.skipped_extensions:
                    text += " (" + ", ".join(
                        f".{e} {c}" for e, c in list(self.skipped_extensions.items())[:4]
                    ) + ")"
                parts.append(text)
            line += f"; skipped {sum(self.skipped.values())}: " + ", ".join(parts)
            hints = {h for e in self.skipped_extensions if (h := missing_decoder_hint(e))}
            line += "".join(f"; {h}" for h in sorted(hints))
            line += f" (list: BASE/{SKIPPED})"
        if self.unlistable:
            shown = ", ".join(repr(u) for u in self.unlistable[:3])
            more = f" and {len(self.unlistable) - 3} more" if len(self.unlistable) > 3 else ""
            line += (
                f"; WARNING: could not list {len(self.unlistable)} folder(s) {shown}{more}: "
                f"their {self.kept} known images were kept as they were; rerun when readable"
            )
        return line


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


def merge_scan(
    old: pa.Table | None, scanned: pa.Table, keep_prefixes: Sequence[str] = ()
) -> tuple[pa.Table, dict[str, int]]:
    """Combine the previous manifest with a fresh scan (pure; see module docstring).

    Old rows not in the scan whose relpath starts with one of ``keep_prefixes`` (folders that
    could not be listed, ending in ``/``) are kept unchanged instead of being marked deleted.
    """
    if old is None or old.num_rows == 0:
        counts = {"new": scanned.num_rows, "changed": 0, "deleted": 0, "restored": 0, "kept": 0}
        return scanned, counts
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
    counts = {"new": 0, "changed": 0, "deleted": 0, "restored": 0, "kept": 0}
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
    kept = gone.slice(0, 0)
    if gone.num_rows and keep_prefixes:
        under = _under_any(gone["relpath"], keep_prefixes)
        kept, gone = gone.filter(under), gone.filter(pc.invert(under))
        counts["kept"] = kept.num_rows
    if gone.num_rows:
        newly = pc.sum(pc.equal(gone["status"], PRESENT)).as_py() or 0
        counts["deleted"] = int(newly)
        now = pa.scalar(int(time.time() * 1000), MANIFEST_SCHEMA.field("last_changed").type)
        changed_col = pc.if_else(pc.equal(gone["status"], PRESENT), now, gone["last_changed"])
        gone = gone.set_column(gone.schema.get_field_index("status"), "status",
                               pa.array([DELETED] * gone.num_rows, pa.string()))
        gone = gone.set_column(gone.schema.get_field_index("last_changed"), "last_changed",
                               changed_col)
    merged = pa.concat_tables([present, kept, gone]).sort_by("relpath")
    return merged, counts


def _under_any(relpaths: pa.ChunkedArray, prefixes: Sequence[str]) -> pa.ChunkedArray:
    """Boolean mask: relpath lies under one of the folder ``prefixes`` (each ending in ``/``)."""
    mask = pc.starts_with(relpaths, pattern=prefixes[0])
    for prefix in prefixes[1:]:
        mask = pc.or_(mask, pc.starts_with(relpaths, pattern=prefix))
    return mask


def _publish_parquet(store: Store, table: pa.Table, dest: str) -> None:
    """Stage locally, verify the row count reads back, publish atomically to ``dest``."""
    with staging_file(suffix=".parquet") as local:
        pq.write_table(table, local, compression="zstd")
        if pq.ParquetFile(local).metadata.num_rows != table.num_rows:
            raise OSError(f"the staged {dest} did not read back; check local disk space")
        store.publish_file(local, dest)


def write_manifest(
    store: Store, table: pa.Table, root: str, extensions: Iterable[str] | None = None
) -> None:
    """Publish the manifest atomically, recording the scanned root (and extensions) as metadata."""
    meta = dict(table.schema.metadata or {})
    meta[b"exoray.root"] = root.encode()
    if extensions is not None:
        meta[b"exoray.extensions"] = ",".join(sorted(extensions)).encode()
    _publish_parquet(store, table.replace_schema_metadata(meta), layout.MANIFEST)


def _norm_skipped(relpath: str) -> str:
    norm = normalize_relpath(relpath)
    return norm + "/" if relpath.endswith("/") and norm else norm


def write_skipped(store: Store, skipped: Sequence[Skipped], root: str) -> None:
    """Replace ``manifests/skipped.parquet`` (relpath, reason, detail) with this scan's list."""
    rows = sorted((_norm_skipped(s.relpath), s.reason, s.detail) for s in skipped)
    table = pa.table(
        {name: pa.array([r[i] for r in rows], pa.string())
         for i, name in enumerate(SKIPPED_SCHEMA.names)},
        schema=SKIPPED_SCHEMA.with_metadata({b"exoray.root": root.encode()}),
    )
    _publish_parquet(store, table, SKIPPED)


def read_skipped(store: Store) -> pa.Table | None:
    """What the last scan skipped and why, or None before the first scan."""
    if not store.exists(SKIPPED):
        return None
    with store.open_input_file(SKIPPED) as f:
        return pq.read_table(f)


def resolve_image_root(store: Store, images: str | None) -> str:
    """``--images`` if given, else the root recorded in the manifest, else BASE/data/images."""
    if images:
        return images if is_uri(images) else os.path.abspath(os.path.expanduser(images))
    recorded = manifest_root(store)
    if recorded:
        return recorded
    return store.uri(layout.DEFAULT_IMAGES)


def _skip_summary(result: ScanResult) -> dict[str, object]:
    counts = Counter(s.reason for s in result.skipped)
    examples: dict[str, list[str]] = {}
    unknown: Counter[str] = Counter()
    for s in result.skipped:
        got = examples.setdefault(s.reason, [])
        if len(got) < MAX_EXAMPLES:
            got.append(s.relpath)
        if s.reason == UNKNOWN_EXTENSION:
            name = s.relpath.rsplit("/", 1)[-1]
            unknown[name.rsplit(".", 1)[1].lower() if "." in name else ""] += 1
    return {
        "skipped": dict(counts),
        "skipped_examples": {k: tuple(v) for k, v in examples.items()},
        "skipped_extensions": dict(unknown.most_common()),
        "unlistable": tuple(result.with_reason(UNLISTABLE)),
        "loops": tuple(result.with_reason(LOOP)),
    }


def build_manifest(
    store: Store, images: str | None = None, extensions: str | Iterable[str] | None = None
) -> ScanSummary:
    """Scan the image root and publish the merged manifest and the skipped list (Phase I).

    ``extensions``: see :func:`exoray.image.extensions.resolve_extensions` (default: the
    ``EXORAY_EXTENSIONS`` variable, else every format the installed decoders open).
    """
    started = time.perf_counter()
    root = resolve_image_root(store, images)
    result = scan_root(root, extensions)
    now = pa.scalar(int(time.time() * 1000), MANIFEST_SCHEMA.field("first_seen").type)
    scanned = _scan_table(result.files, now)
    keep = [_norm_skipped(u) for u in result.with_reason(UNLISTABLE)]
    merged, counts = merge_scan(read_manifest(store), scanned, keep)
    write_manifest(store, merged, root, result.extensions)
    write_skipped(store, result.skipped, root)
    present = int(pc.sum(pc.equal(merged["status"], PRESENT)).as_py() or 0)
    return ScanSummary(root=root, total=merged.num_rows, present=present,
                       seconds=time.perf_counter() - started, **counts,
                       **_skip_summary(result))  # type: ignore[arg-type]
