"""Phase III: CLIP and DINOv2 embeddings, one decode pass, one actor pool per model."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from exoray.engine.done import done_keys, error_keys, pending_mask, present_images
from exoray.engine.ray_runtime import actor_pool_plan, ensure_ray
from exoray.engine.runner import DEFAULT_PART_ROWS, PhaseRun, RunResult, Stage, begin_run, execute
from exoray.engine.stages.embed import PHASE, DecodeWorker, EmbeddingSplitter, EmbedWorker
from exoray.image.decode import DEFAULT_MAX_PIXELS
from exoray.image.manifest import manifest_root
from exoray.models.record import remember_backend
from exoray.storage import layout
from exoray.storage.store import Store
from pipelines.features import require_manifest

MODEL_ACTOR_CPUS = 0.25  # torch uses its own threads; the reservation only has to leave room


@dataclass(frozen=True)
class ModelPlan:
    name: str
    kwargs: dict[str, Any]
    model_id: str
    input_size: int
    batch_size: int
    gpu_share: float


def parse_model_spec(spec: str) -> tuple[str, str | None]:
    """``"clip"`` → (clip, None); ``"clip:ViT-B-16"`` → (clip, ViT-B-16)."""
    name, _, variant = spec.partition(":")
    if not name:
        raise ValueError(f"model spec {spec!r} is empty; use e.g. 'clip', 'dino' or 'clip:ViT-B-16'")
    return name, variant or None


def models_cache_dir(store: Store) -> str | None:
    """BASE/models when BASE is a local or mounted folder (Drive); None (library default) else."""
    path = store.local_path(layout.MODELS)
    if path is not None:
        os.makedirs(path, exist_ok=True)
    return path


def plan_model(store: Store, spec: str, *, checkpoint: str | None, batch_size: int | None,
               device: str | None) -> ModelPlan:
    """Validate a model spec in the driver (clear errors before any actor starts)."""
    from exoray.models import describe_backend

    name, variant = parse_model_spec(spec)
    kwargs = {"variant": variant, "checkpoint": checkpoint, "cache_dir": models_cache_dir(store),
              "device": device, "batch_size": batch_size}
    info = describe_backend(name, **kwargs)
    return ModelPlan(name, kwargs, info["model_id"], info["input_size"],
                     batch_size or info["default_batch_size"], info["gpu_share"])


def todo(store: Store, plans: Sequence[ModelPlan], *, retry_errors: bool, run_id: str) -> pa.Table:
    """Images that still miss at least one model's embedding, with a need_<model> flag each."""
    images = present_images(require_manifest(store))
    failed = pa.array([], pa.string()) if retry_errors else error_keys(store, PHASE)
    need_cols = {}
    for plan in plans:
        done = done_keys(store, layout.embeddings_folder(plan.name), model_id=plan.model_id)
        need_cols[f"need_{plan.name}"] = pending_mask(images, pa.concat_arrays([done, failed]))
    table = images.select(["image_id", "relpath", "fingerprint"])
    any_need = None
    for col, mask in need_cols.items():
        table = table.append_column(col, mask)
        any_need = mask if any_need is None else pc.or_(any_need, mask)
    table = table.filter(any_need) if any_need is not None else table
    return table.append_column("run_id", pa.array([run_id] * table.num_rows, pa.string()))


def run(
    base: str | os.PathLike[str],
    models: Sequence[str] = ("clip", "dino"),
    *,
    checkpoints: dict[str, str] | None = None,
    batch_size: int | None = None,
    device: str | None = None,
    retry_errors: bool = False,
    part_rows: int = DEFAULT_PART_ROWS,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    show_progress: bool = True,
) -> RunResult:
    """Embed every image not yet embedded by each model; safe to kill and rerun."""
    if not models:
        raise ValueError("pass at least one model, e.g. models=['clip', 'dino']")
    names = [parse_model_spec(m)[0] for m in models]
    if len(set(names)) != len(names):
        raise ValueError(f"each model family once per run, got {list(models)}")
    store = Store(base)
    checkpoints = checkpoints or {}
    unknown = set(checkpoints) - set(names)
    if unknown:
        raise ValueError(f"checkpoints given for models not in this run: {sorted(unknown)}")
    plans = [plan_model(store, m, checkpoint=checkpoints.get(parse_model_spec(m)[0]),
                        batch_size=batch_size, device=device) for m in models]
    for plan in plans:
        remember_backend(store, plan.name, plan.model_id, plan.kwargs)
    outputs = [layout.embeddings_folder(p.name) for p in plans]
    run_id = begin_run(store, PHASE, outputs)
    pending = todo(store, plans, retry_errors=retry_errors, run_id=run_id)
    shape = ensure_ray()
    decode_plan = actor_pool_plan(shape)
    stages = [Stage("decode", DecodeWorker,
                    {"image_root": manifest_root(store), "side": max(p.input_size for p in plans),
                     "max_pixels": max_pixels},
                    batch_size=min(p.batch_size for p in plans), pool_size=decode_plan.size,
                    num_cpus=decode_plan.num_cpus, batch_format="numpy")]
    for i, plan in enumerate(plans):
        share = plan.gpu_share if shape.gpus > 0 else 0.0
        stages.append(Stage(
            plan.name, EmbedWorker,
            {"model": plan.name, "backend_kwargs": plan.kwargs, "store_location": store.location,
             "run_id": run_id, "drop_image": i == len(plans) - 1,
             # CPU-only: the model actors share the cores instead of oversubscribing them.
             "cpu_threads": max(1, int(shape.cpus) // len(plans))},
            batch_size=plan.batch_size, pool_size=max(1, int(shape.gpus)) if share else 1,
            num_cpus=MODEL_ACTOR_CPUS, num_gpus=share, batch_format="numpy"))
    return execute(PhaseRun(
        phase=PHASE, store=store, todo=pending, stages=stages, splitter=EmbeddingSplitter(names),
        outputs=outputs, part_rows=part_rows, show_progress=show_progress, run_id=run_id,
        model_id=",".join(p.model_id for p in plans),
        options={"models": list(models), "batch_size": batch_size, "device": device,
                 "retry_errors": retry_errors, "part_rows": part_rows},
    ))
