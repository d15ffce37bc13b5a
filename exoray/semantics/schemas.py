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
TASK_VERSIONS = {"detect": 1, "ocr": 1}

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
