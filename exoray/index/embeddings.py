"""Reading Phase III embeddings back: current rows of one model as a float32 matrix."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from exoray.engine.done import present_images
from exoray.image.manifest import read_manifest
from exoray.storage import layout
from exoray.storage.parts import PartInfo, list_parts, read_parts
from exoray.storage.store import Store


def latest_model_id(store: Store, model: str, parts: list[PartInfo] | None = None) -> str:
    """The model_id written by the newest run (a folder may hold an older variant's rows too)."""
    folder = layout.embeddings_folder(model)
    parts = list_parts(store, folder) if parts is None else parts
    if not parts:
        raise FileNotFoundError(
            f"no {model} embeddings in {store.location}; run `exoray embed {store.location} "
            f"--model {model}` first")
    newest = max(parts, key=lambda p: (p.run_id, p.name))
    return read_parts(store, folder, ["model_id"], parts=[newest])["model_id"][0].as_py()


def vectors_of(table: pa.Table) -> np.ndarray:
    """(n, dim) float32 matrix from a ``vector`` fixed-size-list column."""
    col = table["vector"].combine_chunks()
    if len(col) == 0:
        return np.zeros((0, 0), np.float32)
    dim = col.type.list_size
    return col.flatten().to_numpy(zero_copy_only=False).astype(np.float32).reshape(-1, dim)


def read_current_embeddings(store: Store, model: str, *, model_id: str | None = None,
                            parts: list[PartInfo] | None = None
                            ) -> tuple[list[str], np.ndarray, dict[str, object]]:
    """(image_ids, vectors, info) for present images' current files, one row per image."""
    folder = layout.embeddings_folder(model)
    parts = list_parts(store, folder) if parts is None else parts
    model_id = model_id or latest_model_id(store, model, parts)
    table = read_parts(store, folder, ["image_id", "fingerprint", "model_id", "vector"],
                       parts=parts)
    table = table.filter(pc.equal(table["model_id"], model_id))
    manifest = read_manifest(store)
    if manifest is None:
        raise FileNotFoundError(f"no manifest in {store.location}")
    images = present_images(manifest)
    current = pc.binary_join_element_wise(images["image_id"], images["fingerprint"], "|")
    keys = pc.binary_join_element_wise(table["image_id"], table["fingerprint"], "|")
    table = table.filter(pc.is_in(keys, value_set=current.combine_chunks()))
    table = table.take(pc.sort_indices(table, [("image_id", "ascending")]))
    ids = table["image_id"].to_pylist()
    if len(set(ids)) != len(ids):
        raise RuntimeError(f"{folder} holds an image twice for {model_id}; this breaks the commit "
                           "protocol, please report it")
    info = {"model_id": model_id, "parts": [p.name for p in parts], "count": len(ids)}
    return ids, vectors_of(table), info
