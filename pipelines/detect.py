"""Phase V task ``detect``: object boxes (ultralytics YOLO) on a chosen subset.

``exoray semantics BASE --task detect --subset human_present [--model yolo11n]`` writes one row
per image into ``features/objects/<model id>/`` (schema: ``exoray.semantics.schemas.DETECT_SCHEMA``).
"""

from __future__ import annotations

import os
import re
from typing import Any

from exoray.engine.runner import RunResult, run_phase
from exoray.engine.spec import Option
from exoray.semantics.rows import detect_rows
from exoray.semantics.schemas import DETECT_SCHEMA
from exoray.semantics.tasks import TaskDef, task_spec

OBJECTS = "features/objects"


def _classes(text: str) -> tuple[str, ...]:
    names = tuple(n.strip() for n in str(text).split(",") if n.strip())
    if not names:
        raise ValueError(f"class list {text!r} is empty; give names separated by commas, "
                         "e.g. person or Normal,Fall")
    return names


def _fraction(text: str) -> float:
    value = float(text)
    if not 0 <= value <= 1:
        raise ValueError(f"{text!r} must be between 0 and 1")
    return value


def _alias(spec: str) -> str:
    """``yolo11n`` / ``yolov8s`` → ``yolo:yolo11n``: a bare YOLO name is a variant of yolo."""
    return f"yolo:{spec}" if re.fullmatch(r"yolo(v?\d+)[a-z0-9-]*", spec) else spec


TASK = TaskDef(
    name="detect",
    title="V detect",
    help="Phase V: object detection (ultralytics YOLO) -> features/objects/",
    root=OBJECTS,
    schema=DETECT_SCHEMA,
    convert=detect_rows,
    backends=("yolo",),
    default_model="yolo11n",
    alias=_alias,
    model_options=(
        Option("conf", 0.25, "minimum box score", type=_fraction),
        Option("iou", 0.7, "NMS IoU threshold", type=_fraction),
        Option("max_det", 300, "most boxes per image", type=int),
    ),
    row_options=(
        Option("person_classes", ("person",), "class names counted in person_count (comma "
               "separated; e.g. Normal,Fall for a fall-detection model)", type=_classes),
        Option("face_classes", ("face",), "class names counted in face_count (comma "
               "separated)", type=_classes),
    ),
    next_step="exoray stratify {base}   # human_present / dense_scene now use the detections",
)
SPEC = task_spec(TASK)


def run(base: str | os.PathLike[str], **options: Any) -> RunResult:
    """Detect objects on every image (of ``subset``) not done by this model id yet."""
    return run_phase(SPEC, base, **options)
