"""Every parquet schema a phase writes, in one place, plus the one convention for "no error".

``write_part`` conforms each part to its output's schema, so a stage that drifts from what readers
expect fails loudly at the first part instead of leaving mixed parts behind.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

from exoray.image.cheap_features import FEATURE_COLUMNS

# A stage marks a failed row with a non-empty ``error`` kind and a one-line ``message``. The empty
# string (never None) means "no error": None in object columns turns into NaN between Ray stages.
NO_ERROR = ""
# Error kinds that may pass by themselves: retried on the next run without --retry-errors.
TRANSIENT_ERRORS = frozenset({"io", "memory", "worker"})

IMAGE_KEY = ("image_id", "fingerprint")
ID_COLUMNS = [("image_id", pa.string()), ("relpath", pa.string()), ("fingerprint", pa.string())]
LINEAGE_COLUMNS = [("run_id", pa.string()), ("exoray_version", pa.string())]

FEATURES_SCHEMA = pa.schema(ID_COLUMNS + list(FEATURE_COLUMNS) + LINEAGE_COLUMNS)

EMBEDDINGS_SCHEMA = pa.schema([
    ("image_id", pa.string()),
    ("fingerprint", pa.string()),
    ("model_id", pa.string()),
    ("weights_hash", pa.string()),
    ("dim", pa.int32()),
    ("vector", pa.list_(pa.float16())),  # stored as fixed_size_list<float16>[dim]
    ("run_id", pa.string()),
])
EMBEDDINGS_KEY = ("image_id", "fingerprint", "model_id")

ERROR_SCHEMA = pa.schema([
    ("image_id", pa.string()),
    ("relpath", pa.string()),
    ("fingerprint", pa.string()),
    ("phase", pa.string()),
    ("error", pa.string()),
    ("message", pa.string()),
    ("run_id", pa.string()),
    ("time", pa.timestamp("ms", tz="UTC")),
])
ERRORS_KEY = ("phase", "image_id", "fingerprint")


def failed_mask(table: pa.Table) -> pa.Array | pa.ChunkedArray:
    """True for stage rows that carry an error (null and ``NO_ERROR`` both mean success)."""
    if "error" not in table.column_names:
        return pa.array([False] * table.num_rows)
    errors = pc.cast(table["error"], pa.string())
    return pc.fill_null(pc.not_equal(errors, NO_ERROR), False)
