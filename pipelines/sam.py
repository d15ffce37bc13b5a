"""Phase V task ``sam``: segment-anything automatic masks on a chosen subset.

``exoray semantics BASE --task sam --subset "high_quality and dense_scene" [--points-per-side 16]``
writes one row per image into ``segments/sam_masks/<model id>/`` with every mask as COCO RLE
(schema: ``exoray.semantics.schemas.SAM_SCHEMA``; decode with ``exoray.semantics.masks``).
"""

from __future__ import annotations

import os
from typing import Any

from exoray.engine.runner import RunResult, run_phase
from exoray.engine.spec import Option
from exoray.semantics.rows import sam_rows
from exoray.semantics.schemas import SAM_SCHEMA
from exoray.semantics.tasks import TaskDef, task_spec
from exoray.util.cli_types import positive_int_arg
from pipelines.detect import _fraction

SAM_MASKS = "segments/sam_masks"

TASK = TaskDef(
    name="sam",
    title="V sam",
    help="Phase V: segment-anything masks (COCO RLE) -> segments/sam_masks/",
    root=SAM_MASKS,
    schema=SAM_SCHEMA,
    convert=sam_rows,
    backends=("sam",),
    default_model="sam",
    alias=lambda spec: f"sam:{spec}" if spec in ("vit_b", "vit_l", "vit_h") else spec,
    model_options=(
        Option("points_per_side", None, "prompt grid per side (default: 32, SAM's; 16 is ~4x "
               "cheaper; sam:tiny 8)", type=positive_int_arg),
        Option("max_masks", None, "keep the best masks per image (default: 64)",
               type=positive_int_arg),
        Option("pred_iou_thresh", None, "drop masks the model rates below this (default: 0.88; "
               "sam:tiny 0, its weights are random)", type=_fraction),
        Option("stability_score_thresh", None, "drop unstable masks (default: 0.95; sam:tiny 0)",
               type=_fraction),
        Option("points_per_batch", None, "prompt points per forward pass: fewer need less GPU "
               "memory, halved by itself on CUDA out-of-memory (default: 64)",
               type=positive_int_arg),
        Option("min_mask_region_area", None, "remove holes/islands smaller than this many "
               "pixels (default: 0)", type=int),
    ),
    next_step="see colab/05_sam_and_depth.ipynb   # masks over a gallery",
)
SPEC = task_spec(TASK)


def run(base: str | os.PathLike[str], **options: Any) -> RunResult:
    """Segment every image (of ``subset``) not done by this model id yet."""
    return run_phase(SPEC, base, **options)
