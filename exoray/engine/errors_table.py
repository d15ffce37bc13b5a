"""The errors table: one row per image that a phase could not process, in ``logs/errors/``.

Errors are parts like any output, so they survive kills the same way; an image with an error row
for a phase counts as done for that phase (not retried) unless the user asks ``--retry-errors``.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

from exoray.storage import layout
from exoray.storage.parts import read_parts
from exoray.storage.store import Store

ERROR_SCHEMA = pa.schema(
    [
        ("image_id", pa.string()),
        ("relpath", pa.string()),
        ("fingerprint", pa.string()),
        ("phase", pa.string()),
        ("error", pa.string()),
        ("message", pa.string()),
        ("run_id", pa.string()),
        ("time", pa.timestamp("ms", tz="UTC")),
    ]
)


def read_errors(store: Store, phase: str | None = None) -> pa.Table:
    """All recorded errors (optionally of one phase), oldest parts first."""
    table = read_parts(store, layout.ERRORS, schema=ERROR_SCHEMA)
    if phase is not None and table.num_rows:
        table = table.filter(pc.equal(table["phase"], phase))
    return table


def error_rows(failed: pa.Table, phase: str) -> pa.Table:
    """Errors-table rows from a stage's failed rows (image_id, relpath, fingerprint, error,
    message, run_id columns)."""
    from exoray.engine.jobs import now_utc

    n = failed.num_rows
    return pa.table({
        "image_id": failed["image_id"], "relpath": failed["relpath"],
        "fingerprint": failed["fingerprint"], "phase": pa.array([phase] * n, pa.string()),
        "error": failed["error"], "message": failed["message"], "run_id": failed["run_id"],
        "time": pa.array([now_utc()] * n, ERROR_SCHEMA.field("time").type),
    }, schema=ERROR_SCHEMA)
