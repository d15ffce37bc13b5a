"""What is failing now: the errors table minus images that succeeded since, plus what the
manifest scan skipped (``--phase manifest``)."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

from exoray.engine.done import done_keys
from exoray.engine.errors_table import read_errors, without_successes
from exoray.engine.registry import get_phase, phase_specs
from exoray.engine.schemas import ERROR_SCHEMA
from exoray.storage.store import Store

MANIFEST_PHASE = "manifest"


def failing_now(base: str, phase: str | None = None) -> pa.Table:
    """Latest error per image and phase whose image has not succeeded since (errors schema)."""
    store = Store(base)
    tables = []
    if phase in (None, MANIFEST_PHASE):
        tables.append(skipped_rows(store))
    specs = phase_specs() if phase is None else () if phase == MANIFEST_PHASE \
        else (get_phase(phase),)
    for spec in specs:
        errors = read_errors(store, spec.name)
        if errors.num_rows == 0:
            continue
        done = [done_keys(store, t.folder) for t in spec.discover(store)]
        done = [d for d in done if len(d)]
        tables.append(without_successes(errors, pa.concat_arrays(done)) if done else errors)
    tables = [t for t in tables if t.num_rows]
    return pa.concat_tables(tables) if tables else ERROR_SCHEMA.empty_table()


def skipped_rows(store: Store) -> pa.Table:
    """The last scan's skipped files as errors-table rows of phase ``manifest``."""
    from exoray.image.manifest import read_skipped

    skipped = read_skipped(store)
    if skipped is None or skipped.num_rows == 0:
        return ERROR_SCHEMA.empty_table()
    n = skipped.num_rows
    detail = pc.fill_null(skipped["detail"], "")
    message = pc.binary_join_element_wise(
        skipped["relpath"], pa.scalar(": skipped by the scan ("), skipped["reason"],
        pc.if_else(pc.equal(detail, ""), pa.scalar(")"),
                   pc.binary_join_element_wise(pa.scalar("; "), detail, pa.scalar(")"), "")), "")
    empty = pa.nulls(n, pa.string())
    return pa.table({"image_id": empty, "relpath": skipped["relpath"], "fingerprint": empty,
                     "phase": pa.array([MANIFEST_PHASE] * n, pa.string()),
                     "error": skipped["reason"], "message": message, "run_id": empty,
                     "time": pa.nulls(n, ERROR_SCHEMA.field("time").type)}, schema=ERROR_SCHEMA)
