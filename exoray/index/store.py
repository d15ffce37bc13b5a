"""Phase VII storage: FAISS indices published into BASE/indices, loaded back through a local copy.

An index is three files (index, id map, metadata). To publish them together atomically they go
into a fresh build folder ``indices/<model>/<build_id>/`` and then the pointer
``indices/<model>.json`` (the metadata plus the build id) is published last; readers follow the
pointer, so they see the old index or the new one, never a mix. Old builds are deleted afterwards.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

from exoray.engine.runlog import new_run_id
from exoray.index.embeddings import read_current_embeddings, resolve_embeddings
from exoray.storage import layout
from exoray.storage.parts import list_parts, read_parts
from exoray.storage.staging import staging_root
from exoray.storage.store import Store

INDEX_FILES = (".faiss", ".ids.parquet", ".meta.json")


def pointer_path(model: str) -> str:
    return f"{layout.INDICES}/{model}.json"


def read_pointer(store: Store, model: str) -> dict[str, Any] | None:
    if not store.exists(pointer_path(model)):
        return None
    return json.loads(store.read_bytes(pointer_path(model)))


def load_index(store: Store, model: str):
    """The published index of ``model`` as a :class:`~exoray.index.VectorIndex`.

    Files are copied once per build to local disk (faiss needs a local file; Drive is slow).
    """
    from exoray.index import VectorIndex

    pointer = read_pointer(store, model)
    if pointer is None:
        raise FileNotFoundError(
            f"no {model} index in {store.location}; run `exoray index {store.location} --model "
            f"{model}` first")
    build = pointer["build"]
    local = os.path.join(staging_root(), "indices", _safe(store.location), model, build)
    if not all(os.path.exists(os.path.join(local, model + s)) for s in INDEX_FILES):
        os.makedirs(local, exist_ok=True)
        for suffix in INDEX_FILES:
            data = store.read_bytes(layout.INDICES, model, build, model + suffix)
            tmp = os.path.join(local, f".tmp-{model}{suffix}")
            with open(tmp, "wb") as f:
                f.write(data)
            os.replace(tmp, os.path.join(local, model + suffix))
    return VectorIndex.load(local, model)


def _safe(text: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in text)[-80:]


def build_index(store: Store, model: str, *, kind: str = "auto", rebuild: bool = False,
                seed: int = 0) -> dict[str, Any]:
    """Build (or extend) ``model``'s index from its current embeddings and publish it."""
    from exoray.index import VectorIndex, index_supports_add

    started = time.perf_counter()
    spec, model = model, model.split(":", 1)[0]  # one index per family: its chosen model id
    emb = resolve_embeddings(store, spec)
    model_id = emb.model_id
    ids, vectors, info = read_current_embeddings(store, spec)
    if not ids:
        raise FileNotFoundError(f"no current {model} embeddings to index in {store.location}")
    current = set(ids)
    index, mode = None, "build"
    if not rebuild and read_pointer(store, model) is not None:
        try:
            index = load_index(store, model)
        except (OSError, RuntimeError, ValueError) as exc:
            index, mode = None, f"rebuild (existing index unreadable: {exc})"
        if index is not None:
            stale = [i for i in index.ids if i not in current]
            covered = set(index.meta.get("parts", []))
            fresh = [p for p in list_parts(store, emb.folder) if p.name not in covered]
            if fresh:  # an indexed image embedded again (its file changed) needs a rebuild
                again = read_parts(store, emb.folder, ["image_id"], parts=fresh)
                stale += [i for i in set(again["image_id"].to_pylist()) if i in index]
            same_kind = kind in ("auto", index.kind)
            if (index.meta.get("model_id") != model_id or stale or not same_kind
                    or not index_supports_add(index.kind)):
                why = ("model changed" if index.meta.get("model_id") != model_id else
                       f"{len(stale)} indexed images changed or were deleted" if stale else
                       "kind changed" if not same_kind else f"{index.kind} cannot grow")
                index, mode = None, f"rebuild ({why})"
    if index is None:
        index = VectorIndex.build(vectors, ids, {"model_id": model_id}, kind=kind, seed=seed)
        added = len(ids)
    else:
        row = {i: n for n, i in enumerate(ids)}
        new = [i for i in ids if i not in index]
        if new:
            index.add(vectors[[row[i] for i in new]], new)
        added, mode = len(new), "extend"
    index.meta.update(model_id=model_id, parts=info["parts"], model=model, spec=emb.spec,
                      folder=emb.folder)
    build = new_run_id()
    local = os.path.join(staging_root(), "index-build", build)
    os.makedirs(local, exist_ok=True)
    index.save(local, model)
    for suffix in INDEX_FILES:
        store.publish_file(os.path.join(local, model + suffix), layout.INDICES, model, build,
                           model + suffix)
    with open(os.path.join(local, model + ".meta.json")) as f:
        meta = json.load(f)
    meta["build"] = build
    previous = (read_pointer(store, model) or {}).get("build")
    store.write_bytes_atomic(json.dumps(meta, indent=2).encode(), pointer_path(model))
    # Keep the build the old pointer named: a reader that read it a moment ago still loads it.
    keep = {build, previous}
    for old_build in {e.relpath.split("/", 1)[0]
                      for e in store.list_files(f"{layout.INDICES}/{model}", recursive=True)}:
        if old_build not in keep:
            store.delete(layout.INDICES, model, old_build)
    return {"model": model, "model_id": model_id, "kind": index.kind, "count": len(index),
            "added": added, "mode": mode, "build": build,
            "seconds": round(time.perf_counter() - started, 2)}


def index_coverage(store: Store, model: str) -> dict[str, Any] | None:
    """How far the published index of ``model`` is behind its embeddings (from names alone)."""
    pointer = read_pointer(store, model)
    if pointer is None:
        return None
    covered = set(pointer.get("parts", []))
    folder = pointer.get("folder")
    parts = list_parts(store, folder) if folder else []
    uncovered_rows = sum(p.rows for p in parts if p.name not in covered)
    return {"kind": pointer.get("kind"), "count": pointer.get("count"),
            "model_id": pointer.get("model_id"), "not_indexed": uncovered_rows,
            "built_at": pointer.get("built_at")}
