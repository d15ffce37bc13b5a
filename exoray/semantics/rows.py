"""Stage rows (backend structs as JSON) → the typed Phase V rows, with per-image summaries.

Summaries live here, not in the backends, so every detector and every OCR engine yields the same
counts and text area from the same rules.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from exoray.engine.spec import Target
from exoray.semantics.schemas import (
    DEPTH_SCHEMA,
    DETECT_SCHEMA,
    OCR_SCHEMA,
    SAM_SCHEMA,
    TASK_VERSIONS,
)

AREA_GRID = 256  # text area is the union of boxes, rasterised on this grid (overlaps count once)


def _lineage(rows: pa.Table, target: Target, task: str) -> dict[str, Any]:
    label = target.label
    n = rows.num_rows
    return {
        "image_id": rows["image_id"],
        "fingerprint": rows["fingerprint"],
        "model_id": rows[f"{label}_model_id"],
        "weights_hash": rows[f"{label}_weights_hash"],
        "task_version": pa.array([TASK_VERSIONS[task]] * n, pa.int32()),
        "width": rows["width"].cast(pa.int32()),
        "height": rows["height"].cast(pa.int32()),
    }


def _results(rows: pa.Table, target: Target) -> list[list[dict[str, Any]]]:
    return [json.loads(s) for s in rows[f"{target.label}_result"].to_pylist()]


def _box(values: Sequence[float], n: int) -> list[float]:
    box = [float(min(1.0, max(0.0, v))) for v in values]
    if len(box) != n:
        raise ValueError(f"a box needs {n} coordinates, got {len(box)}")
    return box


def count_classes(objects: Iterable[dict[str, Any]], names: Iterable[str]) -> int:
    """How many objects have a class name in ``names`` (case-insensitive)."""
    wanted = {n.strip().lower() for n in names}
    return sum(1 for o in objects if str(o["class_name"]).lower() in wanted)


def detect_rows(rows: pa.Table, target: Target) -> pa.Table:
    """Sink conversion for the detect task."""
    person = target.info.get("person_classes", ("person",))
    face = target.info.get("face_classes", ("face",))
    objects, persons, faces, counts = [], [], [], []
    for items in _results(rows, target):
        objs = [{"class_id": int(o["class_id"]), "class_name": str(o["class_name"]),
                 "score": float(o["score"]), "box": _box(o["box"], 4)} for o in items]
        objects.append(objs)
        persons.append(count_classes(objs, person))
        faces.append(count_classes(objs, face))
        counts.append(sorted(Counter(o["class_name"] for o in objs).items()))
    columns = _lineage(rows, target, "detect")
    columns.update(
        objects=pa.array(objects, DETECT_SCHEMA.field("objects").type),
        object_count=pa.array([len(o) for o in objects], pa.int32()),
        person_count=pa.array(persons, pa.int32()),
        face_count=pa.array(faces, pa.int32()),
        class_counts=pa.array(counts, DETECT_SCHEMA.field("class_counts").type),
        run_id=rows["run_id"],
    )
    return pa.table(columns, schema=DETECT_SCHEMA)


def text_area(boxes: Iterable[Sequence[float]], grid: int = AREA_GRID) -> float:
    """Fraction of the unit square covered by the union of normalised boxes."""
    mask = np.zeros((grid, grid), bool)
    for x0, y0, x1, y1 in boxes:
        c0, c1 = int(np.floor(x0 * grid)), int(np.ceil(x1 * grid))
        r0, r1 = int(np.floor(y0 * grid)), int(np.ceil(y1 * grid))
        mask[max(0, r0):min(grid, r1), max(0, c0):min(grid, c1)] = True
    return float(mask.mean())


def ocr_rows(rows: pa.Table, target: Target) -> pa.Table:
    """Sink conversion for the ocr task."""
    lines, texts, areas, confidences = [], [], [], []
    for items in _results(rows, target):
        found = [{"text": str(li["text"]), "confidence": float(li["confidence"]),
                  "box": _box(li["box"], 4), "quad": _box(li["quad"], 8)} for li in items]
        lines.append(found)
        texts.append("\n".join(li["text"] for li in found))
        areas.append(text_area(li["box"] for li in found))
        confidences.append(float(np.mean([li["confidence"] for li in found])) if found
                           else None)
    columns = _lineage(rows, target, "ocr")
    columns.update(
        lines=pa.array(lines, OCR_SCHEMA.field("lines").type),
        text=pa.array(texts, pa.string()),
        line_count=pa.array([len(li) for li in lines], pa.int32()),
        text_area=pa.array(areas, pa.float32()),
        mean_confidence=pa.array(confidences, pa.float32()),
        run_id=rows["run_id"],
    )
    return pa.table(columns, schema=OCR_SCHEMA)


def sam_rows(rows: pa.Table, target: Target) -> pa.Table:
    """Sink conversion for the sam task: masks as RLE structs, plus counts."""
    masks = []
    for items in _results(rows, target):
        masks.append([{"rle": {"counts": str(m["rle"]["counts"]),
                               "size": [int(v) for v in m["rle"]["size"]]},
                       "bbox": _box(m["bbox"], 4), "area": float(m["area"]),
                       "predicted_iou": float(m["predicted_iou"]),
                       "stability_score": float(m["stability_score"]),
                       "point": _box(m["point"], 2)} for m in items])
    columns = _lineage(rows, target, "sam")
    columns.update(
        masks=pa.array(masks, SAM_SCHEMA.field("masks").type),
        mask_count=pa.array([len(m) for m in masks], pa.int32()),
        largest_area=pa.array([max((x["area"] for x in m), default=0.0) for m in masks],
                              pa.float32()),
        run_id=rows["run_id"],
    )
    return pa.table(columns, schema=SAM_SCHEMA)


DEPTH_STATS = ("min", "max", "mean", "p05", "p50", "p95")


def depth_rows(rows: pa.Table, target: Target) -> pa.Table:
    """Sink conversion for the depth task: statistics plus a low-resolution float16 map."""
    found = []
    for items in _results(rows, target):
        if len(items) != 1:
            raise ValueError(f"the depth backend must return one result per image, got "
                             f"{len(items)}")
        found.append(items[0])
    columns = _lineage(rows, target, "depth")
    for stat in DEPTH_STATS:
        columns[f"depth_{stat}"] = pa.array([float(d[stat]) for d in found], pa.float32())
    columns.update(
        near_far_ratio=pa.array([float(d["near_far_ratio"]) for d in found], pa.float32()),
        depth_map=pa.array([np.asarray(d["map"], np.float16) for d in found],
                           pa.list_(pa.float16())),
        map_height=pa.array([int(d["map_size"][0]) for d in found], pa.int32()),
        map_width=pa.array([int(d["map_size"][1]) for d in found], pa.int32()),
        run_id=rows["run_id"],
    )
    return pa.table(columns, schema=DEPTH_SCHEMA)
