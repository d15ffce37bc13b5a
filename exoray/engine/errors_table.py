"""The errors table: one row per image a phase could not process, in ``logs/errors/<phase>/``.

Errors are parts like any output, so they survive kills the same way, and each phase sweeps and
compacts only its own folder. Readers keep the newest outcome per (phase, image, file version):
``--retry-errors`` that fails again replaces the row instead of adding one, and an image that later
succeeded is dropped by :func:`current_errors`.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

from exoray.engine.schemas import ERROR_SCHEMA, ERRORS_KEY, TRANSIENT_ERRORS
from exoray.storage import layout
from exoray.storage.parts import key_strings, list_parts, read_parts
from exoray.storage.store import Store


def error_phases(store: Store) -> list[str]:
    """Phases with an errors folder in BASE."""
    if not store.is_dir(layout.ERRORS):
        return []
    return sorted({e.relpath.split("/", 1)[0] for e in store.list_files(layout.ERRORS,
                                                                        recursive=True)
                   if "/" in e.relpath})


def read_errors(store: Store, phase: str | None = None) -> pa.Table:
    """Latest error row per (phase, image, fingerprint), optionally of one phase.

    Rows in the flat ``logs/errors/`` of older versions are read too.
    """
    phases = [phase] if phase is not None else error_phases(store)
    tables = [read_parts(store, layout.errors_folder(p), schema=ERROR_SCHEMA, key=ERRORS_KEY)
              for p in phases]
    if list_parts(store, layout.ERRORS):
        legacy = read_parts(store, layout.ERRORS, schema=ERROR_SCHEMA, key=ERRORS_KEY)
        if phase is not None:
            legacy = legacy.filter(pc.equal(legacy["phase"], phase))
        tables.insert(0, legacy)
    tables = [t for t in tables if t.num_rows]
    if not tables:
        return ERROR_SCHEMA.empty_table()
    from exoray.storage.parts import deduplicate

    return deduplicate(pa.concat_tables(tables), ERRORS_KEY)


def image_keys(table: pa.Table) -> pa.Array:
    keys = key_strings(table, ("image_id", "fingerprint"))
    return keys.combine_chunks() if isinstance(keys, pa.ChunkedArray) else keys


def without_successes(errors: pa.Table, done: pa.Array) -> pa.Table:
    """Errors whose image (same file version) has not succeeded since: a success supersedes."""
    if errors.num_rows == 0 or len(done) == 0:
        return errors
    return errors.filter(pc.invert(pc.is_in(image_keys(errors), value_set=done)))


def permanent(errors: pa.Table) -> pa.Table:
    """Errors that will not pass by themselves (transient ones are retried on the next run)."""
    if errors.num_rows == 0:
        return errors
    return errors.filter(pc.invert(pc.is_in(errors["error"],
                                            value_set=pa.array(sorted(TRANSIENT_ERRORS)))))


def error_rows(failed: pa.Table, phase: str) -> pa.Table:
    """Errors-table rows from a stage's failed rows (image_id, relpath, fingerprint, error,
    message, run_id columns)."""
    from exoray.engine.runlog import now_utc

    n = failed.num_rows
    return pa.table({
        "image_id": failed["image_id"], "relpath": failed["relpath"],
        "fingerprint": failed["fingerprint"], "phase": pa.array([phase] * n, pa.string()),
        "error": pc.cast(failed["error"], pa.string()),
        "message": pc.cast(failed["message"], pa.string()), "run_id": failed["run_id"],
        "time": pa.array([now_utc()] * n, ERROR_SCHEMA.field("time").type),
    }, schema=ERROR_SCHEMA)
