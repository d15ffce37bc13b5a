"""Phase II: cheap features for every manifest image, a Ray Data pipeline of CPU actors."""

from __future__ import annotations

import os

import pyarrow as pa

from exoray.engine.done import done_keys, error_keys, pending_mask, present_images
from exoray.engine.ray_runtime import actor_pool_plan, ensure_ray
from exoray.engine.runner import DEFAULT_PART_ROWS, PhaseRun, RunResult, Stage, begin_run, execute
from exoray.engine.stages.features import PHASE, FeatureWorker, split_feature_rows
from exoray.image.decode import DEFAULT_MAX_PIXELS
from exoray.image.manifest import manifest_root, read_manifest
from exoray.storage import layout
from exoray.storage.store import Store

DEFAULT_BATCH_SIZE = 16


def require_manifest(store: Store) -> pa.Table:
    manifest = read_manifest(store)
    if manifest is None:
        raise FileNotFoundError(
            f"no manifest in {store.location}; run `exoray manifest {store.location} --images DIR` "
            "first"
        )
    return manifest


def todo(store: Store, *, retry_errors: bool = False) -> pa.Table:
    """Manifest images without a features row (or a permanent error) for their current file."""
    images = present_images(require_manifest(store))
    done = done_keys(store, layout.FEATURES)
    if not retry_errors:
        done = pa.concat_arrays([done, error_keys(store, PHASE)])
    pending = images.filter(pending_mask(images, done))
    return pending.select(["image_id", "relpath", "fingerprint"])


def run(
    base: str | os.PathLike[str],
    *,
    retry_errors: bool = False,
    part_rows: int = DEFAULT_PART_ROWS,
    batch_size: int = DEFAULT_BATCH_SIZE,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_actors: int | None = None,
    show_progress: bool = True,
) -> RunResult:
    """Compute Phase II features for every image not done yet; safe to kill and rerun."""
    if part_rows < 1 or batch_size < 1:
        raise ValueError("part_rows and batch_size must be positive integers")
    store = Store(base)
    run_id = begin_run(store, PHASE, [layout.FEATURES])
    pending = todo(store, retry_errors=retry_errors)
    shape = ensure_ray()
    root = manifest_root(store)
    plan = actor_pool_plan(shape, max_actors=max_actors)
    stage = Stage(
        name="features",
        fn=FeatureWorker,
        constructor_kwargs={"image_root": root, "run_id": run_id, "max_pixels": max_pixels},
        batch_size=batch_size,
        pool_size=plan.size,
        num_cpus=plan.num_cpus,
    )
    return execute(PhaseRun(
        phase=PHASE, store=store, todo=pending, stages=[stage], splitter=split_feature_rows,
        outputs=[layout.FEATURES], part_rows=part_rows, show_progress=show_progress, run_id=run_id,
        options={"retry_errors": retry_errors, "part_rows": part_rows, "batch_size": batch_size,
                 "max_pixels": max_pixels, "image_root": root},
    ))
