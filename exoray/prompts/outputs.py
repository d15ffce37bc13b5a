"""Phase VI outputs: ``captions/<prompt id>/v<version>/<model id>/`` parts, one row per image.

One folder per (prompt id, version, model id) is the done-set: a bumped version or another model
runs again, and the old rows stay beside it for comparison. Each folder keeps a ``prompt.json``
(the prompt as it ran, its hash, the model id), which is also what the forgotten-version-bump
check compares the registry against.
"""

from __future__ import annotations

import json
from typing import Any

import pyarrow as pa

from exoray.engine.spec import Output, Target
from exoray.storage import layout
from exoray.storage.store import Store

CAPTIONS = "captions"
PROMPT_FILE = "prompt.json"
CAPTIONS_KEY = ("image_id", "fingerprint", "prompt_id", "prompt_version", "model_id")
CAPTIONS_SCHEMA = pa.schema([
    ("image_id", pa.string()),
    ("fingerprint", pa.string()),
    ("prompt_id", pa.string()),
    ("prompt_version", pa.int32()),
    ("prompt_hash", pa.string()),
    ("task", pa.string()),
    ("model_id", pa.string()),
    ("weights_hash", pa.string()),
    ("generation", pa.string()),  # JSON of the generate() settings used
    ("raw_text", pa.string()),  # the model's answer as generated
    ("value", pa.string()),  # the parsed answer as JSON (int, bool, list, ...), null if it failed
    ("parse_error", pa.string()),  # why the answer could not be parsed, null when it could
    ("run_id", pa.string()),
])
OUTPUT = Output("captions", CAPTIONS_SCHEMA, CAPTIONS_KEY)


def prompt_folder(prompt_id: str, version: int, model_id: str) -> str:
    return f"{CAPTIONS}/{prompt_id}/v{version}/{layout.slug(model_id)}"


def remember_prompt(store: Store, folder: str, record: dict[str, Any]) -> None:
    """Write the folder's ``prompt.json`` once (what ran: the check compares against it)."""
    if not store.exists(folder, PROMPT_FILE):
        store.write_bytes_atomic(json.dumps(record, indent=2).encode(), folder, PROMPT_FILE)


def prompt_records(store: Store) -> list[tuple[str, dict[str, Any]]]:
    """(folder, prompt.json) of every prompt output in BASE."""
    if not store.is_dir(CAPTIONS):
        return []
    out = []
    for entry in store.list_files(CAPTIONS, suffix=PROMPT_FILE, recursive=True):
        folder = f"{CAPTIONS}/{entry.relpath.rsplit('/', 1)[0]}"
        out.append((folder, json.loads(store.read_bytes(folder, PROMPT_FILE))))
    return sorted(out)


def recorded_hashes(store: Store) -> dict[tuple[str, int], str]:
    """(prompt id, version) -> the hash that ran, for the forgotten-bump check."""
    return {(r["prompt_id"], int(r["version"])): r["hash"] for _, r in prompt_records(store)}


def caption_rows(rows: pa.Table, target: Target) -> pa.Table:
    """Sink conversion: raw answers of one prompt, parsed per its output type."""
    from exoray.prompts import parse_output
    from exoray.prompts.registry import Prompt

    info = target.info
    prompt = Prompt(**info["prompt"])
    raw = rows[f"{target.label}_text"].to_pylist()
    values, errors = [], []
    for text in raw:
        value, error = parse_output(prompt, text or "")
        values.append(None if error else json.dumps(value))
        errors.append(error or None)
    n = rows.num_rows
    return pa.table({
        "image_id": rows["image_id"],
        "fingerprint": rows["fingerprint"],
        "prompt_id": pa.array([prompt.id] * n, pa.string()),
        "prompt_version": pa.array([prompt.version] * n, pa.int32()),
        "prompt_hash": pa.array([info["hash"]] * n, pa.string()),
        "task": pa.array([prompt.task] * n, pa.string()),
        "model_id": rows[f"{target.label}_model_id"],
        "weights_hash": rows[f"{target.label}_weights_hash"],
        "generation": pa.array([json.dumps(info["generation"], sort_keys=True)] * n, pa.string()),
        "raw_text": pa.array(raw, pa.string()),
        "value": pa.array(values, pa.string()),
        "parse_error": pa.array(errors, pa.string()),
        "run_id": rows["run_id"],
    }, schema=CAPTIONS_SCHEMA)


def discover_prompts(store: Store) -> list[Target]:
    """One target per (prompt, version, model id) on disk, labelled ``id@version`` (plus the
    model id when a prompt version ran with several models)."""
    records = prompt_records(store)
    seen: dict[str, int] = {}
    for _, r in records:
        key = f"{r['prompt_id']}@{r['version']}"
        seen[key] = seen.get(key, 0) + 1
    out = []
    for folder, r in records:
        key = f"{r['prompt_id']}@{r['version']}"
        label = key if seen[key] == 1 else f"{key}:{r['model_id']}"
        out.append(Target(label, folder, OUTPUT, model_id=r["model_id"], info={"record": r}))
    return out
