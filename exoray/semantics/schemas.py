"""Phase V parquet schemas: one row per image and model id, instances as lists of structs.

One row per image (not per instance) keeps parts small, makes "done" a plain key lookup and keeps
images with nothing found visible (an empty list, not a missing row). Per-image counts
(``person_count``, ``text_area``) are plain columns, so Phase IV and notebooks filter without
exploding the lists; :func:`exoray.semantics.read_objects` explodes them when wanted.
"""

from __future__ import annotations

import pyarrow as pa

TASK_KEY = ("image_id", "fingerprint", "model_id")
# Bump when the rows a task writes change meaning (post-processing, normalisation): rows of an
# older version stay readable and say which code made them.
TASK_VERSIONS = {"detect": 1, "ocr": 1, "sam": 1, "depth": 1}

BOX = pa.list_(pa.float32(), 4)  # x0, y0, x1, y1 in [0, 1] of the displayed image
QUAD = pa.list_(pa.float32(), 8)  # four corners, same normalisation

LINEAGE = [
    ("image_id", pa.string()),
    ("fingerprint", pa.string()),
    ("model_id", pa.string()),
    ("weights_hash", pa.string()),
    ("task_version", pa.int32()),
    ("width", pa.int32()),  # displayed (EXIF-oriented) size of the image, pixels
    ("height", pa.int32()),
]
RUN = [("run_id", pa.string())]

OBJECT = pa.struct([
    ("class_id", pa.int32()),
    ("class_name", pa.string()),
    ("score", pa.float32()),
    ("box", BOX),
])
DETECT_SCHEMA = pa.schema(LINEAGE + [
    ("objects", pa.list_(OBJECT)),
    ("object_count", pa.int32()),
    ("person_count", pa.int32()),
    ("face_count", pa.int32()),
    ("class_counts", pa.map_(pa.string(), pa.int32())),
] + RUN)

LINE = pa.struct([
    ("text", pa.string()),
    ("confidence", pa.float32()),
    ("box", BOX),
    ("quad", QUAD),
])
OCR_SCHEMA = pa.schema(LINEAGE + [
    ("lines", pa.list_(LINE)),
    ("text", pa.string()),  # the lines in reading order, joined by newlines
    ("line_count", pa.int32()),
    ("text_area", pa.float32()),  # fraction of the image covered by text boxes (their union)
    ("mean_confidence", pa.float32()),
] + RUN)

# COCO-compatible run-length encoding (compressed ``counts`` string, ``size`` = [h, w] of the
# picture at the working resolution); exoray.semantics.masks decodes it without pycocotools.
RLE = pa.struct([("counts", pa.string()), ("size", pa.list_(pa.int32(), 2))])
MASK = pa.struct([
    ("rle", RLE),
    ("bbox", BOX),
    ("area", pa.float32()),  # fraction of the image
    ("predicted_iou", pa.float32()),
    ("stability_score", pa.float32()),
    ("point", pa.list_(pa.float32(), 2)),  # the prompt point that produced it, normalised
])
SAM_SCHEMA = pa.schema(LINEAGE + [
    ("masks", pa.list_(MASK)),
    ("mask_count", pa.int32()),
    ("largest_area", pa.float32()),
] + RUN)

# Depth Anything predicts relative inverse depth (disparity): larger = nearer, no unit.
DEPTH_SCHEMA = pa.schema(LINEAGE + [
    ("depth_min", pa.float32()),
    ("depth_max", pa.float32()),
    ("depth_mean", pa.float32()),
    ("depth_p05", pa.float32()),
    ("depth_p50", pa.float32()),
    ("depth_p95", pa.float32()),
    ("near_far_ratio", pa.float32()),
    ("depth_map", pa.list_(pa.float16())),  # low resolution, row-major, map_height x map_width
    ("map_height", pa.int32()),
    ("map_width", pa.int32()),
] + RUN)
