"""Phase V task ``ocr``: text lines (rapidocr PP-OCR on ONNX, or easyocr) on a chosen subset.

``exoray semantics BASE --task ocr --subset text_heavy [--model rapidocr|easyocr]`` writes one row
per image into ``features/ocr/<model id>/`` (schema: ``exoray.semantics.schemas.OCR_SCHEMA``);
``exoray search BASE --text-in-image WORD`` searches it.
"""

from __future__ import annotations

import os
from typing import Any

from exoray.engine.runner import RunResult, run_phase
from exoray.engine.spec import Option
from exoray.semantics.rows import ocr_rows
from exoray.semantics.schemas import OCR_SCHEMA
from exoray.semantics.tasks import TaskDef, task_spec
from pipelines.detect import _fraction

OCR = "features/ocr"

TASK = TaskDef(
    name="ocr",
    title="V ocr",
    help="Phase V: text lines (rapidocr / easyocr) -> features/ocr/",
    root=OCR,
    schema=OCR_SCHEMA,
    convert=ocr_rows,
    backends=("rapidocr", "easyocr"),
    default_model="rapidocr",
    model_options=(
        Option("min_confidence", 0.5, "drop text lines read with less confidence",
               type=_fraction),
    ),
    next_step="exoray search {base} --text-in-image WORD   # or exoray stratify {base}",
)
SPEC = task_spec(TASK)


def run(base: str | os.PathLike[str], **options: Any) -> RunResult:
    """Read text on every image (of ``subset``) not done by this model id yet."""
    return run_phase(SPEC, base, **options)
