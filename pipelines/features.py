"""Phase II: cheap features for every manifest image: CPU stages as a Ray Data pipeline, or in
a local process pool for small runs while Ray is not running (``exoray.engine.local_pool``)."""

from __future__ import annotations

import os
from typing import Any

from exoray.engine.ray_runtime import ClusterShape, actor_pool_plan
from exoray.engine.runner import RunResult, Stage, run_phase
from exoray.engine.schemas import FEATURES_SCHEMA
from exoray.engine.spec import Option, Output, PhaseSpec, StageContext, Target
from exoray.engine.stages.features import FeatureWorker
from exoray.image.cheap_features import FEATURES_VERSION
from exoray.image.decode import DEFAULT_MAX_PIXELS
from exoray.storage import layout
from exoray.storage.store import Store
from exoray.util.cli_types import positive_int, positive_int_arg

# Rows of an older features definition are out of date: the next run recomputes them.
FEATURES = Output("features", FEATURES_SCHEMA, version=("features_version", FEATURES_VERSION))
# Shared by every phase that decodes images.
MAX_PIXELS_OPTION = Option("max_pixels", DEFAULT_MAX_PIXELS,
                           "larger images are refused as decompression bombs",
                           type=positive_int_arg)


def _target() -> Target:
    return Target("features", layout.FEATURES, FEATURES)


def resolve(store: Store, opts: dict[str, Any]) -> list[Target]:
    for name in ("batch_size", "max_pixels"):
        positive_int(opts[name], name=name)
    return [_target()]


def stages(ctx: StageContext) -> list[Stage]:
    plan = actor_pool_plan(ClusterShape(ctx.cpus, ctx.gpus), max_actors=ctx.options["max_actors"])
    return [Stage("features", FeatureWorker,
                  {"image_root": ctx.image_root, "run_id": ctx.run_id,
                   "max_pixels": ctx.options["max_pixels"]},
                  batch_size=ctx.options["batch_size"], pool_size=plan.size,
                  num_cpus=plan.num_cpus)]


def discover(store: Store) -> list[Target]:
    return [_target()]


SPEC = PhaseSpec(
    name="features",
    title="II cheap features",
    help="Phase II: cheap features, hashes for every image (Ray Data CPU actors)",
    outputs=(FEATURES,),
    options=(
        Option("batch_size", 16, "images per actor batch", type=positive_int_arg),
        MAX_PIXELS_OPTION,
        Option("max_actors", None, "at most this many feature actors (default: one per core)",
               type=positive_int_arg),
    ),
    resolve=resolve,
    stages=stages,
    discover=discover,
    local_ok=True,
    next_step="exoray dupes {base}   # exact and near-duplicate groups",
)


def run(base: str | os.PathLike[str], **options: Any) -> RunResult:
    """Compute Phase II features for every image not done yet; safe to kill and rerun.

    Options: ``batch_size``, ``max_pixels``, ``max_actors`` plus the runner's ``retry_errors``,
    ``part_rows``, ``estimate``, ``show_progress``, ``max_minutes`` and ``executor`` (small runs
    use a local process pool while Ray is not running; ``executor="ray"`` forces Ray Data).
    """
    return run_phase(SPEC, base, **options)


def todo(store: Store, *, retry_errors: bool = False):
    """Manifest images without a features row (or a permanent error) for their current file."""
    from exoray.engine.runner import compute_todo

    return compute_todo(store, SPEC, [_target()], retry_errors=retry_errors).select(
        ["image_id", "relpath", "fingerprint"])
