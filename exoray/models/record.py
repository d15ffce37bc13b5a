"""Which backend arguments produced a model_id, so search can rebuild the same text encoder."""

from __future__ import annotations

import json
from typing import Any

from exoray.storage import layout
from exoray.storage.store import Store


def _path(model: str) -> tuple[str, str]:
    return layout.embeddings_folder(model), "backends.json"


def remember_backend(store: Store, model: str, model_id: str, kwargs: dict[str, Any]) -> None:
    records = read_backends(store, model)
    keep = {k: kwargs.get(k) for k in ("variant", "checkpoint")}
    if records.get(model_id) != keep:
        records[model_id] = keep
        store.write_bytes_atomic(json.dumps(records, indent=2).encode(), *_path(model))


def read_backends(store: Store, model: str) -> dict[str, dict[str, Any]]:
    if not store.exists(*_path(model)):
        return {}
    return json.loads(store.read_bytes(*_path(model)))


def backend_kwargs_for(store: Store, model: str, model_id: str) -> dict[str, Any]:
    record = read_backends(store, model).get(model_id)
    if record is None:
        raise KeyError(f"no record of how {model_id} was loaded in {store.location}; rerun "
                       f"`exoray embed` with the same --model to record it")
    return record
