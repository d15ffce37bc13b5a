"""Duplicate groups from Phase II hashes (and optionally embeddings) into features/dupes.parquet."""

from __future__ import annotations

import os
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from exoray.engine.done import present_images
from exoray.image.dupes import find_hash_duplicates, merge_duplicate_tables, summarize_duplicates
from exoray.image.manifest import read_manifest
from exoray.storage import layout
from exoray.storage.parts import read_parts
from exoray.storage.staging import staging_file
from exoray.storage.store import Store


def current_rows(store: Store, folder: str, columns: list[str]) -> pa.Table:
    """Rows of ``folder`` for images present now with their current fingerprint."""
    manifest = read_manifest(store)
    if manifest is None:
        raise FileNotFoundError(f"no manifest in {store.location}; run `exoray manifest` first")
    images = present_images(manifest).select(["image_id", "fingerprint", "relpath"])
    table = read_parts(store, folder, list(dict.fromkeys(["image_id", "fingerprint", *columns])))
    if table.num_rows == 0:
        return table
    joined = table.join(images, keys=["image_id", "fingerprint"], join_type="inner")
    return joined


def run(base: str | os.PathLike[str], *, max_distance: int = 6, model: str | None = None,
        threshold: float = 0.95) -> dict[str, Any]:
    """Group duplicates and publish ``features/dupes.parquet``; returns a summary dict."""
    store = Store(base)
    feats = current_rows(store, layout.FEATURES, ["content_hash", "phash"])
    if feats.num_rows == 0:
        raise FileNotFoundError(f"no Phase II features in {store.location}; run `exoray features` first")
    tables = [find_hash_duplicates(feats["image_id"].to_pylist(), feats["content_hash"].to_pylist(),
                                   feats["phash"].to_pylist(), max_distance=max_distance)]
    if model is not None:
        from exoray.image.dupes import find_embedding_duplicates
        from exoray.index.embeddings import read_current_embeddings

        ids, vectors, _ = read_current_embeddings(store, model)
        tables.append(find_embedding_duplicates(ids, vectors, threshold=threshold))
    groups = merge_duplicate_tables(*tables) if len(tables) > 1 else tables[0]
    relpaths = feats.select(["image_id", "relpath"])
    groups = groups.join(relpaths, keys="image_id", join_type="left outer").sort_by(
        [("group_id", "ascending"), ("image_id", "ascending")])
    with staging_file(suffix=".parquet") as local:
        pq.write_table(groups, local)
        store.publish_file(local, layout.DUPES)
    summary = summarize_duplicates(groups)
    summary["images_checked"] = feats.num_rows
    summary["output"] = store.uri(layout.DUPES)
    return summary


def format_summary(summary: dict[str, Any]) -> str:
    lines = [f"checked {summary['images_checked']} images -> {summary['output']}"]
    for key, value in summary.items():
        if key not in ("images_checked", "output"):
            lines.append(f"  {key}: {value}")
    return "\n".join(lines)


def read_dupes(base: str) -> pa.Table:
    store = Store(base)
    with store.open_input_file(layout.DUPES) as f:
        return pq.read_table(f)


def group_members(table: pa.Table, group_id: int) -> pa.Table:
    return table.filter(pc.equal(table["group_id"], group_id))
