"""Duplicate groups from Phase II hashes (and optionally embeddings) into features/dupes.parquet.

``run`` groups; ``list_duplicates`` reads the groups back for people to act on: every member with
its relpath and which one to keep. Both read Phase II through ``exoray.engine.readers``, so only
present images with their current file version, one row each, ever reach a group or a list.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from exoray.engine.readers import read_features
from exoray.image.dupes import find_hash_duplicates, merge_duplicate_tables, summarize_duplicates
from exoray.storage import layout
from exoray.storage.staging import staging_file
from exoray.storage.store import Store

# Schema metadata of dupes.parquet: how the grouping was made, so a list can say it is stale.
_META_KEY = b"exoray.dupes"

# Columns of ``list_duplicates``, in order (the CSV/JSON columns of `exoray dupes BASE --list`).
LIST_COLUMNS = ("group_id", "kind", "keep", "image_id", "relpath", "width", "height", "bytes",
                "sharpness")
# Which member of a group to keep: most pixels, then sharpest, then largest file (least
# compressed); among equals (byte-identical copies) the shallowest, shortest path, which is the
# original more often than a "copy of" in a sub-folder; then relpath, so the choice is stable.
KEEP_RULE = ("most pixels, then sharpest, then largest file, then fewest folders, then shortest "
             "relpath")


def _store(base: str | os.PathLike[str] | Store) -> Store:
    return base if isinstance(base, Store) else Store(base)


def _require_manifest(store: Store) -> None:
    if not store.exists(layout.MANIFEST):
        raise FileNotFoundError(f"no manifest in {store.location}; run "
                                f"`exoray manifest {store.location} --images DIR` first")


def run(base: str | os.PathLike[str], *, max_distance: int = 6, model: str | None = None,
        threshold: float = 0.95) -> dict[str, Any]:
    """Group duplicates and publish ``features/dupes.parquet``; returns a summary dict."""
    store = _store(base)
    _require_manifest(store)
    feats = read_features(store, ["image_id", "fingerprint", "relpath", "content_hash", "phash",
                                  "dhash"])
    if feats.num_rows == 0:
        raise FileNotFoundError(f"no Phase II features in {store.location}; run "
                                f"`exoray features {store.location}` first")
    # dHash as a second, independent signal catches crops pHash alone misses (see image/dupes).
    tables = [find_hash_duplicates(feats["image_id"], feats["content_hash"], feats["phash"],
                                   max_distance=max_distance, dhashes=feats["dhash"])]
    if model is not None:
        from exoray.image.dupes import find_embedding_duplicates
        from exoray.index.embeddings import read_current_embeddings

        ids, vectors, _ = read_current_embeddings(store, model)
        tables.append(find_embedding_duplicates(ids, vectors, threshold=threshold))
    groups = merge_duplicate_tables(*tables) if len(tables) > 1 else tables[0]
    ids = feats.select(["image_id", "relpath", "fingerprint"])
    groups = groups.join(ids, keys="image_id", join_type="left outer").sort_by(
        [("group_id", "ascending"), ("image_id", "ascending")])
    meta = {"images_checked": feats.num_rows, "max_distance": max_distance, "model": model,
            "threshold": threshold if model is not None else None,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    groups = groups.replace_schema_metadata({_META_KEY: json.dumps(meta).encode()})
    with staging_file(suffix=".parquet") as local:
        pq.write_table(groups, local)
        store.publish_file(local, layout.DUPES)
    summary = summarize_duplicates(groups.select(["image_id", "group_id", "kind"]))
    summary["images_checked"] = feats.num_rows
    summary["output"] = store.uri(layout.DUPES)
    return summary


def format_summary(summary: dict[str, Any]) -> str:
    lines = [f"checked {summary['images_checked']} images -> {summary['output']}"]
    for key, value in summary.items():
        if key not in ("images_checked", "output"):
            lines.append(f"  {key}: {value}")
    return "\n".join(lines)


def has_dupes(base: str | os.PathLike[str] | Store) -> bool:
    """Whether ``features/dupes.parquet`` exists (``run`` has grouped this BASE)."""
    return _store(base).exists(layout.DUPES)


def read_dupes(base: str | os.PathLike[str] | Store) -> pa.Table:
    """``features/dupes.parquet`` as written (groups as of the last ``run``)."""
    store = _store(base)
    if not store.exists(layout.DUPES):
        raise FileNotFoundError(f"no duplicate groups in {store.location}; run "
                                f"`exoray dupes {store.location}` first")
    with store.open_input_file(layout.DUPES) as f:
        return pq.read_table(f)


def dupes_info(table: pa.Table) -> dict[str, Any]:
    """How a dupes table was made (``images_checked``, ``max_distance``, ``model``, ...);
    empty for files written before exoray recorded it."""
    raw = (table.schema.metadata or {}).get(_META_KEY)
    return json.loads(raw) if raw else {}


def group_members(table: pa.Table, group_id: int) -> pa.Table:
    return table.filter(pc.equal(table["group_id"], group_id))


@dataclass
class DuplicateList:
    """Current duplicate groups, one row per member (``LIST_COLUMNS``), keepers first."""

    table: pa.Table
    notes: list[str] = field(default_factory=list)

    @property
    def groups(self) -> int:
        return len(pc.unique(self.table["group_id"])) if self.table.num_rows else 0

    @property
    def redundant(self) -> int:
        """Images that could go if each group's keeper stays."""
        return self.table.num_rows - self.groups


def present_groups(base: str | os.PathLike[str] | Store, *,
                   features: pa.Table | None = None) -> tuple[pa.Table, list[str]]:
    """Rows of dupes.parquet whose image is present now in the version that was grouped,
    joined with its Phase II row; groups left with one member are dropped.

    ``features`` (from ``read_features``, with image_id, fingerprint and the columns wanted)
    saves a second read. Returns the joined table and notes on what changed since grouping.
    """
    store = _store(base)
    groups = read_dupes(store)
    info = dupes_info(groups)
    if features is None:
        features = read_features(store, ["image_id", "fingerprint", "relpath", "width", "height",
                                          "bytes", "sharpness"])
    notes = []
    grouped_fp = "fingerprint" in groups.column_names
    left = groups.select(["image_id", "group_id", "kind", *(["fingerprint"] if grouped_fp else [])])
    if grouped_fp:
        left = left.rename_columns(["image_id", "group_id", "kind", "grouped_fingerprint"])
    joined = left.join(features, keys="image_id", join_type="inner")
    if grouped_fp:
        joined = joined.filter(pc.equal(joined["grouped_fingerprint"],
                                        joined["fingerprint"])).drop_columns(
            ["grouped_fingerprint"])
    gone = groups.num_rows - joined.num_rows
    if gone:
        notes.append(f"{gone} grouped image(s) vanished or changed since grouping")
    if joined.num_rows:
        gid = joined["group_id"].to_numpy()
        _, inverse, counts = np.unique(gid, return_inverse=True, return_counts=True)
        joined = joined.filter(pa.array(counts[inverse.ravel()] >= 2))
    checked = info.get("images_checked")
    if checked is not None and checked != features.num_rows:
        notes.append(f"grouped {checked} images, {features.num_rows} have features now")
    if notes:
        notes.append(f"rerun `exoray dupes {store.location}` to regroup")
    return joined, notes


def list_duplicates(base: str | os.PathLike[str] | Store) -> DuplicateList:
    """Every current member of every duplicate group, with its relpath and the one to keep.

    Per group the keeper is chosen by ``KEEP_RULE`` from Phase II features; rows are ordered by
    group, keeper first, then the others in the same order of preference.
    """
    joined, notes = present_groups(base)
    rel = joined["relpath"]
    joined = (joined
              .append_column("_pixels", pc.multiply(joined["width"].cast(pa.int64()),
                                                    joined["height"].cast(pa.int64())))
              .append_column("_depth", pc.count_substring(rel, "/"))
              .append_column("_length", pc.utf8_length(rel)))
    ranked = joined.sort_by([("group_id", "ascending"), ("_pixels", "descending"),
                             ("sharpness", "descending"), ("bytes", "descending"),
                             ("_depth", "ascending"), ("_length", "ascending"),
                             ("relpath", "ascending"), ("image_id", "ascending")])
    gid = ranked["group_id"].to_numpy()
    keep = np.ones(gid.size, dtype=bool)
    keep[1:] = gid[1:] != gid[:-1]
    ranked = ranked.append_column("keep", pa.array(keep))
    table = ranked.select(list(LIST_COLUMNS))
    return DuplicateList(table=table, notes=notes)
