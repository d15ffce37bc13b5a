"""Phase V task ``depth``: monocular depth (Depth Anything V2) on a chosen subset.

``exoray semantics BASE --task depth --subset photo`` writes one row per image into
``features/depth/<model id>/``: statistics and a low-resolution map
(schema: ``exoray.semantics.schemas.DEPTH_SCHEMA``).
"""

from __future__ import annotations

import os
from typing import Any

from exoray.engine.runner import RunResult, run_phase
from exoray.engine.spec import Option
from exoray.semantics.rows import depth_rows
from exoray.semantics.schemas import DEPTH_SCHEMA
from exoray.semantics.tasks import TaskDef, task_spec
from exoray.util.cli_types import positive_int_arg

DEPTH = "features/depth"

TASK = TaskDef(
    name="depth",
    title="V depth",
    help="Phase V: monocular depth (Depth Anything V2) -> features/depth/",
    root=DEPTH,
    schema=DEPTH_SCHEMA,
    convert=depth_rows,
    backends=("depth",),
    default_model="depth",
    model_options=(
        Option("map_size", None, "long side of the stored depth map (default: 64)",
               type=positive_int_arg),
    ),
    next_step="see colab/05_sam_and_depth.ipynb   # depth maps over a gallery",
)
SPEC = task_spec(TASK)


def run(base: str | os.PathLike[str], **options: Any) -> RunResult:
    """Estimate depth for every image (of ``subset``) not done by this model id yet."""
    return run_phase(SPEC, base, **options)
