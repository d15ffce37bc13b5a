"""Reading Phase V outputs for notebooks and the CLI: per image, per instance, text search.

Everything goes through :func:`exoray.engine.readers.read_output` (deduplicated, current files
only); relpaths come from the manifest so results can be opened directly.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from exoray.engine.readers import read_output
from exoray.image.manifest import read_manifest
from exoray.storage.store import Store

Base = str | os.PathLike[str] | Store


def _store(base: Base) -> Store:
    return base if isinstance(base, Store) else Store(base)


def with_relpath(store: Store, table: pa.Table) -> pa.Table:
    """``relpath`` added from the manifest (outputs are keyed by image_id only)."""
    manifest = read_manifest(store)
    if manifest is None or "relpath" in table.column_names:
        return table
    # index_in, not a join: Arrow joins cannot carry list-of-struct columns along.
    pos = pc.index_in(table["image_id"], value_set=manifest["image_id"].combine_chunks())
    return table.append_column("relpath", manifest["relpath"].combine_chunks().take(pos))


def read_task(base: Base, task: str, model: str | None = None) -> pa.Table:
    """One row per image of ``task`` ('detect', 'ocr'); the newest model id unless ``model``
    (a label such as ``yolo:yolov8s`` or the family ``yolo``) picks another."""
    store = _store(base)
    return with_relpath(store, read_output(store, task, model))


def read_objects(base: Base, model: str | None = None) -> pa.Table:
    """One row per detected object: image_id, relpath, class_name, score, box (x0, y0, x1, y1
    normalised to the displayed image)."""
    table = read_task(base, "detect", model)
    idx = pc.list_parent_indices(table["objects"])
    flat = pc.list_flatten(table["objects"])
    out = pa.table({"image_id": table["image_id"].take(idx), "relpath": table["relpath"].take(idx)})
    for name in ("class_id", "class_name", "score", "box"):
        out = out.append_column(name, pc.struct_field(flat, name))
    return out


def read_ocr_lines(base: Base, model: str | None = None) -> pa.Table:
    """One row per OCR text line: image_id, relpath, line (its number in reading order), text,
    confidence, box."""
    table = read_task(base, "ocr", model)
    idx = pc.list_parent_indices(table["lines"])
    flat = pc.list_flatten(table["lines"])
    starts = pa.array([0] * len(idx), pa.int64())
    if len(idx):
        offsets = table["lines"].combine_chunks().offsets.to_numpy()
        positions = np.arange(len(idx)) - offsets[idx.to_numpy()]
        starts = pa.array(positions, pa.int64())
    out = pa.table({"image_id": table["image_id"].take(idx),
                    "relpath": table["relpath"].take(idx), "line": starts})
    for name in ("text", "confidence", "box"):
        out = out.append_column(name, pc.struct_field(flat, name))
    return out


def search_text(base: Base, query: str, *, model: str | None = None, limit: int | None = None
                ) -> list[dict[str, Any]]:
    """Images whose OCR lines contain every word of ``query`` (case-insensitive), with the
    matching lines; best first (more matching lines, then higher confidence)."""
    words = [w for w in str(query).split() if w]
    if not words:
        raise ValueError("--text-in-image needs a word to look for, e.g. --text-in-image pharmacy")
    lines = read_ocr_lines(base, model)
    text = lines["text"]
    any_word = pc.match_substring(text, words[0], ignore_case=True)
    for word in words[1:]:
        any_word = pc.or_(any_word, pc.match_substring(text, word, ignore_case=True))
    hits = lines.filter(any_word).to_pylist()
    by_image: dict[str, dict[str, Any]] = {}
    for row in hits:
        entry = by_image.setdefault(row["image_id"], {"image_id": row["image_id"],
                                                      "relpath": row["relpath"], "lines": []})
        entry["lines"].append({"line": row["line"], "text": row["text"],
                               "confidence": row["confidence"], "box": row["box"]})
    results = []
    for entry in by_image.values():
        joined = " ".join(li["text"] for li in entry["lines"]).lower()
        if all(w.lower() in joined for w in words):
            entry["score"] = len(entry["lines"]) + max(li["confidence"] for li in entry["lines"])
            results.append(entry)
    results.sort(key=lambda e: (-e["score"], e["relpath"] or ""))
    return results[:limit] if limit else results
