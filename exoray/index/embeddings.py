"""Phase III output on disk: one folder per model id, and reading current vectors back.

``embeddings/<model>/<model-id slug>/`` holds the parts of one model id and a ``model.json``
saying how it was loaded (variant, checkpoint), so search can rebuild the same text encoder.
Keeping model ids apart means a second variant (another dimension) never breaks reading,
indexing or search of the first. ``--model clip`` means the family's most recently run model id.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from exoray.engine.done import present_images
from exoray.engine.schemas import EMBEDDINGS_KEY
from exoray.image.manifest import read_manifest
from exoray.storage import layout
from exoray.storage.parts import PartInfo, list_parts, read_parts
from exoray.storage.store import Store

MODEL_FILE = "model.json"


@dataclass(frozen=True)
class EmbeddingSet:
    """The embeddings of one model id in BASE."""

    model: str  # family: clip, dino
    model_id: str
    folder: str
    record: dict[str, Any]

    @property
    def variant(self) -> str | None:
        return self.record.get("variant")

    @property
    def spec(self) -> str:
        return f"{self.model}:{self.variant}" if self.variant else self.model


def remember_model(store: Store, model: str, model_id: str, kwargs: dict[str, Any],
                   dim: int | None) -> str:
    """Write the model id's ``model.json`` (once) and return its folder."""
    folder = layout.embeddings_folder(model, model_id)
    record = {"model": model, "model_id": model_id, "dim": dim,
              **{k: kwargs.get(k) for k in ("variant", "checkpoint")}}
    if not store.exists(folder, MODEL_FILE) or _read_json(store, folder) != record:
        store.write_bytes_atomic(json.dumps(record, indent=2).encode(), folder, MODEL_FILE)
    return folder


def _read_json(store: Store, folder: str) -> dict[str, Any]:
    return json.loads(store.read_bytes(folder, MODEL_FILE))


def embedding_sets(store: Store, model: str | None = None) -> list[EmbeddingSet]:
    """Every model id with a folder in BASE (of one family if given), in name order."""
    families = [model] if model else _families(store)
    out = []
    for family in families:
        root = layout.embeddings_family(family)
        for entry in store.list_files(root, suffix=MODEL_FILE, recursive=True):
            sub, _, name = entry.relpath.rpartition("/")
            if not sub or name != MODEL_FILE:
                continue
            record = _read_json(store, f"{root}/{sub}")
            out.append(EmbeddingSet(family, record["model_id"], f"{root}/{sub}", record))
    return out


def _families(store: Store) -> list[str]:
    if not store.is_dir(layout.EMBEDDINGS):
        return []
    return sorted({e.relpath.split("/", 1)[0]
                   for e in store.list_files(layout.EMBEDDINGS, recursive=True)
                   if e.relpath.count("/") >= 2})


def resolve_embeddings(store: Store, spec: str) -> EmbeddingSet:
    """``clip`` → the family's most recently written model id; ``clip:ViT-L-14`` → that variant."""
    model, _, variant = spec.partition(":")
    sets = embedding_sets(store, model)
    if variant:
        sets = [s for s in sets if s.variant == variant or s.model_id == variant]
    if not sets:
        have = sorted({s.spec for s in embedding_sets(store)})
        raise FileNotFoundError(
            f"no {spec} embeddings in {store.location}; run `exoray embed {store.location} "
            f"--model {spec}` first" + (f" (embedded so far: {', '.join(have)})" if have else ""))

    def newest(s: EmbeddingSet) -> str:
        parts = list_parts(store, s.folder)
        return max((p.run_id for p in parts), default="")

    return max(sets, key=newest)


def vectors_of(table: pa.Table) -> np.ndarray:
    """(n, dim) float32 matrix from a ``vector`` fixed-size-list column."""
    col = table["vector"].combine_chunks()
    if len(col) == 0:
        return np.zeros((0, 0), np.float32)
    dim = col.type.list_size
    return col.flatten().to_numpy(zero_copy_only=False).astype(np.float32).reshape(-1, dim)


def read_current_embeddings(store: Store, model: str, *, parts: list[PartInfo] | None = None
                            ) -> tuple[list[str], np.ndarray, dict[str, Any]]:
    """(image_ids, vectors, info) for present images' current files, one row per image."""
    emb = resolve_embeddings(store, model)
    parts = list_parts(store, emb.folder) if parts is None else parts
    table = read_parts(store, emb.folder, ["image_id", "fingerprint", "model_id", "vector"],
                       parts=parts, key=EMBEDDINGS_KEY)
    manifest = read_manifest(store)
    if manifest is None:
        raise FileNotFoundError(f"no manifest in {store.location}")
    images = present_images(manifest)
    current = pc.binary_join_element_wise(images["image_id"], images["fingerprint"], "|")
    keys = pc.binary_join_element_wise(table["image_id"], table["fingerprint"], "|")
    table = table.filter(pc.is_in(keys, value_set=current.combine_chunks()))
    table = table.take(pc.sort_indices(table, [("image_id", "ascending")]))
    ids = table["image_id"].to_pylist()
    info = {"model_id": emb.model_id, "folder": emb.folder, "parts": [p.name for p in parts],
            "count": len(ids), "record": emb.record}
    return ids, vectors_of(table), info
