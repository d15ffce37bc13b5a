"""What ``exoray prompts`` shows: the registry checked against what ran, version comparisons and
text search over the answers. Reads BASE only (no model)."""

from __future__ import annotations

import json
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from exoray.prompts.outputs import CAPTIONS_KEY, CAPTIONS_SCHEMA, prompt_records, recorded_hashes
from exoray.storage.parts import list_parts, read_parts
from exoray.storage.store import Store


def overview(store: Store) -> dict[str, Any]:
    """Registry prompts with their versions/hashes, what ran (rows per version and model), and
    the problems (an edited prompt whose version was not bumped)."""
    from exoray.prompts import load_registry, version_problems

    registry = load_registry(store)
    runs: dict[str, list[dict[str, Any]]] = {}
    for folder, record in prompt_records(store):
        rows = sum(p.rows for p in list_parts(store, folder))
        runs.setdefault(record["prompt_id"], []).append(
            {"version": record["version"], "model_id": record["model_id"], "rows": rows,
             "hash": record["hash"], "folder": folder})
    prompts = [{"id": p.id, "task": p.task, "version": p.version, "output": p.output,
                "hash": p.hash, "line": p.line, "model": p.model, "text": p.text,
                "runs": runs.get(p.id, [])} for p in registry.prompts]
    return {"registry": registry.path,
            "created": registry.created, "prompts": prompts,
            "problems": version_problems(registry, recorded_hashes(store))}


def format_overview(view: dict[str, Any]) -> str:
    lines = [f"registry {view['registry']}" + (" (just created with the starter prompts)"
                                               if view["created"] else "")]
    for p in view["prompts"]:
        lines.append(f"  {p['id']:<20} v{p['version']}  {p['task']:<8} -> {p['output']:<8} "
                     f"hash {p['hash']}" + (f"  model {p['model']}" if p["model"] else ""))
        for r in p["runs"]:
            lines.append(f"      ran v{r['version']} with {r['model_id']}: {r['rows']} rows"
                         + ("" if r["hash"] == p["hash"] or r["version"] != p["version"]
                            else "  (hash differs: see below)"))
    lines += [f"problem: {line}" for line in view["problems"]]
    return "\n".join(lines)


def _folder_of(store: Store, key: str) -> str:
    """``caption_v1@2`` (optionally ``:model-id``) → its output folder."""
    spec, _, model = key.partition(":")
    prompt_id, _, version = spec.partition("@")
    found = [(f, r) for f, r in prompt_records(store)
             if r["prompt_id"] == prompt_id and (not version or str(r["version"]) == version)
             and (not model or r["model_id"] == model)]
    if not found:
        have = sorted({f"{r['prompt_id']}@{r['version']}" for _, r in prompt_records(store)})
        raise ValueError(f"no outputs of {key!r} in {store.location}; ran so far: "
                         f"{', '.join(have) or 'nothing'} (run `exoray interpret BASE --prompt "
                         f"{prompt_id}`)")
    return max(found, key=lambda fr: max((p.run_id for p in list_parts(store, fr[0])),
                                         default=""))[0]


def read_answers(store: Store, key: str) -> pa.Table:
    """Current answers of one prompt version (``id@version``), one row per image, with relpath."""
    from exoray.engine.done import present_images
    from exoray.engine.errors_table import image_keys
    from exoray.image.manifest import read_manifest
    from exoray.semantics.read import with_relpath

    table = read_parts(store, _folder_of(store, key), key=CAPTIONS_KEY, schema=CAPTIONS_SCHEMA)
    manifest = read_manifest(store)
    if manifest is not None and table.num_rows:
        current = image_keys(present_images(manifest))
        table = table.filter(pc.is_in(image_keys(table), value_set=current))
    return with_relpath(store, table)


def compare(store: Store, left: str, right: str) -> list[dict[str, Any]]:
    """Side by side answers of two prompt versions (or models) for the images both answered."""
    a = {r["image_id"]: r for r in read_answers(store, left).to_pylist()}
    b = {r["image_id"]: r for r in read_answers(store, right).to_pylist()}
    rows = []
    for image_id in sorted(set(a) & set(b), key=lambda i: a[i]["relpath"] or ""):
        rows.append({"image_id": image_id, "relpath": a[image_id]["relpath"],
                     left: a[image_id]["raw_text"], right: b[image_id]["raw_text"],
                     "same": a[image_id]["value"] == b[image_id]["value"]})
    return rows


def search_answers(store: Store, query: str, prompt: str | None = None,
                   limit: int | None = None) -> list[dict[str, Any]]:
    """Images whose answers (captions, tags, ...) contain every word of ``query``."""
    words = [w for w in str(query).split() if w]
    if not words:
        raise ValueError("--caption needs a word to look for, e.g. --caption 'red bicycle'")
    keys = [prompt] if prompt else sorted({f"{r['prompt_id']}@{r['version']}"
                                           for _, r in prompt_records(store)})
    if not keys:
        raise FileNotFoundError(f"no prompt outputs in {store.location}; run `exoray interpret "
                                f"{store.location} --prompt ID` first")
    hits = []
    for key in keys:
        table = read_answers(store, key)
        mask = pa.array([True] * table.num_rows, pa.bool_())
        for word in words:
            mask = pc.and_(mask, pc.fill_null(pc.match_substring(table["raw_text"], word,
                                                                 ignore_case=True), False))
        for row in table.filter(mask).to_pylist():
            hits.append({"image_id": row["image_id"], "relpath": row["relpath"],
                         "prompt": f"{row['prompt_id']}@{row['prompt_version']}",
                         "model_id": row["model_id"], "text": row["raw_text"],
                         "value": json.loads(row["value"]) if row["value"] else None})
    hits.sort(key=lambda h: (h["relpath"] or "", h["prompt"]))
    return hits[:limit] if limit else hits
