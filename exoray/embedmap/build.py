"""``exoray map``: build the 2-D map of a model's current embeddings into BASE, or say it is
already up to date.

A map is up to date when the embeddings it was made from are the current ones (same model id,
same image ids and file fingerprints) and it was made with the same method, sample size and
seed: then a rerun only reads the embeddings' keys (never the vectors) and changes nothing.
"""

from __future__ import annotations

import hashlib
import time
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from exoray.embedmap.files import (
    MAPS,
    map_table,
    pointer_path,
    publish_map,
    publish_pointer,
    read_map_file,
    read_pointer,
    remove_old_builds,
)
from exoray.embedmap.layout2d import DEFAULT_SAMPLE, Log, layout_2d
from exoray.embedmap.reduce import DEFAULT_METHOD, check_method, require
from exoray.engine.done import present_images
from exoray.engine.failpoints import hit
from exoray.engine.runlog import new_run_id, now_utc
from exoray.engine.schemas import EMBEDDINGS_KEY
from exoray.image.manifest import read_manifest
from exoray.index.embeddings import (
    EmbeddingSet,
    embedding_sets,
    read_current_embeddings,
    resolve_embeddings,
)
from exoray.storage.lease import Fence, LeaseKeeper, take_lease
from exoray.storage.parts import PartInfo, list_parts, read_parts
from exoray.storage.store import Store
from exoray.util.cli_types import positive_int

EMBEDDING_MODELS = ("clip", "dino")  # Phase III's families; NAME:VARIANT picks a model id


def _store(base: str | Store) -> Store:
    store = base if isinstance(base, Store) else Store(base)
    if not store.is_dir(""):
        raise FileNotFoundError(f"BASE {store.location} does not exist; check the path")
    return store


def _family(store: Store, model: str) -> str:
    family = model.split(":", 1)[0]
    if not family:
        raise ValueError(f"--model {model!r} is empty; use clip, dino or NAME:VARIANT")
    if family not in EMBEDDING_MODELS and family not in {s.model for s in embedding_sets(store)}:
        raise ValueError(f"unknown model {model!r}: a map is drawn from embeddings; use "
                         f"{', '.join(EMBEDDING_MODELS)} or NAME:VARIANT (e.g. clip:ViT-L-14)")
    return family


def read_map(base: str | Store, model: str = "clip") -> pa.Table | None:
    """The map of ``model``'s embeddings: image_id, x, y (float32), fitted (bool), sorted by
    image_id; None when ``exoray map`` has not built one (or built it from another variant
    than ``model`` names)."""
    store = base if isinstance(base, Store) else Store(base)
    record = map_info(store, model)
    return None if record is None else read_map_file(store, record["file"])


def map_info(base: str | Store, model: str = "clip") -> dict[str, Any] | None:
    """The map's record (method, sample, counts, model id, created), or None without a map."""
    store = base if isinstance(base, Store) else Store(base)
    family, _, variant = model.partition(":")
    record = read_pointer(store, family)
    if record is None or (variant and variant not in (record.get("variant"),
                                                      record.get("model_id"))):
        return None
    return record


def current_keys_digest(store: Store, emb: EmbeddingSet, parts: list[PartInfo],
                        images: pa.Table | None = None) -> tuple[str, int]:
    """(digest, count) of the current (image_id, fingerprint) pairs embedded by ``emb``: the
    same rows :func:`read_current_embeddings` returns, read without their vectors.
    ``images``: the manifest's present images, when the caller has read them already."""
    table = read_parts(store, emb.folder, list(EMBEDDINGS_KEY), parts=parts, key=EMBEDDINGS_KEY)
    if images is None:
        manifest = read_manifest(store)
        if manifest is None:
            raise FileNotFoundError(f"no manifest in {store.location}; run `exoray manifest "
                                    f"{store.location}` first")
        images = present_images(manifest)
    current = pc.binary_join_element_wise(images["image_id"], images["fingerprint"], "|")
    keys = pc.binary_join_element_wise(table["image_id"], table["fingerprint"], "|")
    keys = keys.filter(pc.is_in(keys, value_set=current.combine_chunks()))
    digest = hashlib.blake2b(emb.model_id.encode(), digest_size=16)
    for key in sorted(keys.to_pylist()):
        digest.update(b"\n" + key.encode())
    return digest.hexdigest(), len(keys)


def build_map(base: str | Store, model: str = "clip", *, sample: int = DEFAULT_SAMPLE,
              method: str = DEFAULT_METHOD, seed: int = 0, force: bool = False,
              log: Log | None = None) -> dict[str, Any]:
    """Build (or confirm up to date) the 2-D map of ``model``'s current embeddings in BASE.

    ``method`` (pacmap, umap) is fitted on a seeded sample of at most ``sample`` embeddings
    after a PCA to 50-d; the others are placed beside their nearest fitted neighbours. Returns
    the map's record plus ``status`` (``built`` / ``up to date``) and ``why``.
    """
    check_method(method)
    sample = positive_int(sample, name="sample")
    store = _store(base)
    family = _family(store, model)
    emb = resolve_embeddings(store, model)  # its error names `exoray embed BASE --model ...`
    say = log or (lambda _line: None)
    run_id = new_run_id()
    phase = f"map-{family}"
    take_lease(store, phase, run_id)
    with LeaseKeeper(store, phase, run_id):
        started = time.perf_counter()
        parts = list_parts(store, emb.folder)
        inputs, count = current_keys_digest(store, emb, parts)
        if count == 0:
            raise FileNotFoundError(
                f"no current {model} embeddings in {store.location} (every embedded image "
                f"changed or was deleted); run `exoray embed {store.location} --model {model}`")
        params = {"method": method, "sample": sample, "seed": int(seed)}
        previous = read_pointer(store, family)
        why = _stale_reason(previous, emb, inputs, params, count, store)
        if why is None and not force:
            return {**previous, "status": "up to date", "why": "embeddings unchanged",
                    "pointer": pointer_path(family)}
        why = "--force" if why is None else why
        say(f"{model}: building the map ({why})")
        require(method)  # missing package: say so before reading a million vectors
        ids, vectors, _ = read_current_embeddings(store, model, parts=parts)
        say(f"read {len(ids):,} {emb.spec} embeddings ({vectors.shape[1]}-d) in "
            f"{time.perf_counter() - started:.1f}s")
        layout = layout_2d(vectors, method=method, sample=sample, seed=seed, log=say)
        build = new_run_id()
        path = publish_map(store, family, build, map_table(ids, layout.xy, layout.fitted))
        hit("map_before_pointer")
        record = {
            "model": family, "spec": emb.spec, "model_id": emb.model_id, "variant": emb.variant,
            "embeddings": emb.folder, "inputs": inputs, **params,
            "method_used": layout.method, "placement": layout.placement,
            "pca_dim": layout.pca_dim, "count": len(ids), "fitted": int(layout.fitted.sum()),
            "placed": int((~layout.fitted).sum()), "build": build, "file": path,
            "created": now_utc().isoformat(timespec="seconds"),
            "seconds": {**layout.seconds, "total": round(time.perf_counter() - started, 2)},
        }
        Fence(store, phase, run_id, check_orphan=False)()
        publish_pointer(store, family, record)
        remove_old_builds(store, family, {build, (previous or {}).get("build", build)})
        say(f"wrote {store.uri(path)} ({len(ids):,} points) and {store.uri(pointer_path(family))}")
    return {**record, "status": "built", "why": why, "pointer": pointer_path(family)}


def map_staleness(store: Store, record: dict[str, Any], images: pa.Table | None = None
                  ) -> str | None:
    """Why a published map no longer shows the current embeddings (for ``exoray status``), or
    None when it does. Reads the embeddings' keys only, as a rerun of ``exoray map`` would;
    ``images``: the manifest's present images, when the caller has read them already."""
    family, variant = record.get("model", ""), record.get("variant")
    try:
        emb = resolve_embeddings(store, f"{family}:{variant}" if variant else family)
    except FileNotFoundError:
        return "its embeddings are gone"
    if emb.model_id != record.get("model_id"):
        return f"newer embeddings: {emb.model_id}"
    inputs, count = current_keys_digest(store, emb, list_parts(store, emb.folder), images)
    if inputs != record.get("inputs"):
        return f"embeddings changed ({count} current, {record.get('count', 0)} placed)"
    if not store.exists(record.get("file", f"{MAPS}/missing")):
        return "map file missing"
    return None


def _stale_reason(previous: dict[str, Any] | None, emb: EmbeddingSet, inputs: str,
                  params: dict[str, Any], count: int, store: Store) -> str | None:
    """Why the published map must be rebuilt, or None when it is up to date (a larger
    ``sample`` than there are points fits the same points: that changes nothing)."""
    if previous is None:
        return "no map yet"
    if previous.get("model_id") != emb.model_id:
        return f"model changed: {previous.get('model_id')} -> {emb.model_id}"
    if previous.get("inputs") != inputs:
        return "embeddings changed"
    def same(key: str, value: Any) -> bool:
        if key == "sample":
            return min(int(previous.get(key) or 0), count) == min(value, count)
        return previous.get(key) == value

    changed = [f"{k} {previous.get(k)} -> {v}" for k, v in params.items() if not same(k, v)]
    if changed:
        return ", ".join(changed)
    if not store.exists(previous.get("file", f"{MAPS}/missing")):
        return "map file missing"
    return None
