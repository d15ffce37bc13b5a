"""The commit protocol: the only code that writes or reads phase parts in BASE.

A phase output folder holds ``part-<run_id>-<task>-<seq>-n<rows>.parquet`` files. A part is
written on local disk, closed, re-opened to check its footer and row count, then published (copy to
a hidden temporary name + rename; one put on object stores). Readers only ever see final names, so
a kill at any instant leaves either the whole part or nothing. The row count in the name lets
``exoray status`` and progress count work without opening files (slow on Drive).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.parquet as pq

from exoray.storage.staging import staging_file
from exoray.storage.store import Store

log = logging.getLogger(__name__)

PART_RE = re.compile(r"^part-(?P<run>[0-9A-Za-z_]+)-(?P<task>\d+)-(?P<seq>[0-9a-f]+)-n(?P<rows>\d+)\.parquet$")
TMP_PREFIX = ".tmp-"
QUARANTINE = "quarantine"
READ_THREADS = 16  # parallel part reads: Drive/S3 latency, not CPU, bounds these


class PartError(RuntimeError):
    """A part failed verification before publication (nothing was published)."""


@dataclass(frozen=True)
class PartInfo:
    """A published part, described by its name alone."""

    name: str
    run_id: str
    task: int
    rows: int
    size: int


def part_name(run_id: str, task: int, seq: str, rows: int) -> str:
    return f"part-{run_id}-{task:05d}-{seq}-n{rows}.parquet"


def parse_part_name(name: str) -> tuple[str, int, int] | None:
    """(run_id, task, rows) for a final part name, None for anything else."""
    m = PART_RE.match(name)
    if not m:
        return None
    return m["run"], int(m["task"]), int(m["rows"])


def write_part(
    store: Store,
    folder: str,
    table: pa.Table,
    *,
    run_id: str,
    task: int,
    seq: str,
    staging_dir: str | None = None,
    compression: str = "zstd",
    before_publish: Callable[[], None] | None = None,
) -> PartInfo:
    """Stage ``table`` locally, verify it, publish it into ``folder``; returns the part.

    Raises :class:`PartError` if the staged file does not read back with the same row count;
    then nothing reaches BASE. ``before_publish`` runs last, right before the publish, and may
    raise to withhold the part (see :mod:`exoray.storage.lease`).
    """
    if table.num_rows == 0:
        raise ValueError(f"refusing to publish an empty part into {folder!r}")
    name = part_name(run_id, task, seq, table.num_rows)
    with staging_file(suffix=".parquet", staging_dir=staging_dir) as local:
        pq.write_table(table, local, compression=compression)
        meta = pq.ParquetFile(local).metadata
        if meta.num_rows != table.num_rows:
            raise PartError(
                f"staged part {name} reads back {meta.num_rows} rows, expected {table.num_rows}; "
                "check free space on the local disk (EXORAY_STAGING)"
            )
        if before_publish is not None:
            before_publish()
        store.publish_file(local, folder, name)
    return PartInfo(name, run_id, task, table.num_rows, store.size(folder, name))


def list_parts(store: Store, folder: str) -> list[PartInfo]:
    """Published parts of ``folder`` in name order (temporary files are never listed)."""
    parts = []
    for entry in store.list_files(folder, suffix=".parquet"):
        parsed = parse_part_name(entry.relpath)
        if parsed is not None:
            run_id, task, rows = parsed
            parts.append(PartInfo(entry.relpath, run_id, task, rows, entry.size))
    return parts


def sweep(store: Store, folder: str, *, verify: bool = True) -> dict[str, int]:
    """Start-of-run clean-up: delete temporary leftovers, quarantine unreadable parts.

    A quarantined part's images are simply not done, so the run does them again. ``verify=False``
    skips the footer check when the caller reads every part next anyway (``read_parts`` checks
    the same), halving start-up I/O on Drive.
    """
    removed = 0
    for entry in store.list_files(folder):
        name = entry.relpath
        if name.startswith(TMP_PREFIX) or (name.endswith(".parquet") and name.startswith("part-")
                                             and parse_part_name(name) is None):
            store.delete(folder, name)
            removed += 1
    quarantined = 0
    if not verify:
        return {"removed_temporary": removed, "quarantined": 0}
    parts = list_parts(store, folder)
    with ThreadPoolExecutor(READ_THREADS) as pool:
        rows = list(pool.map(lambda p: _footer_rows(store, folder, p.name), parts))
    for part, got in zip(parts, rows, strict=True):
        if got != part.rows:
            quarantine_part(store, folder, part.name, reason=f"footer rows {got} != name {part.rows}")
            quarantined += 1
    return {"removed_temporary": removed, "quarantined": quarantined}


def _footer_rows(store: Store, folder: str, name: str) -> int | None:
    try:
        with store.open_input_file(folder, name) as f:
            return pq.ParquetFile(f).metadata.num_rows
    except (OSError, pa.ArrowException) as exc:
        log.warning("part %s/%s is unreadable: %s", folder, name, exc)
        return None


def quarantine_part(store: Store, folder: str, name: str, *, reason: str) -> None:
    log.warning("quarantining %s/%s (%s); its images will be processed again", folder, name, reason)
    store.move((folder, name), (QUARANTINE, folder, name))


def read_parts(
    store: Store,
    folder: str,
    columns: Sequence[str] | None = None,
    *,
    parts: Sequence[PartInfo] | None = None,
    schema: pa.Schema | None = None,
) -> pa.Table:
    """All published parts of ``folder`` as one table (only ``columns`` read), threads in parallel.

    A part that became unreadable after the sweep is quarantined and skipped, never fatal.
    """
    parts = list_parts(store, folder) if parts is None else list(parts)
    if not parts:
        if schema is not None:
            return schema.empty_table() if columns is None else pa.schema(
                [schema.field(c) for c in columns]).empty_table()
        return pa.table({c: pa.array([], pa.string()) for c in (columns or [])})

    def read(part: PartInfo) -> pa.Table | None:
        try:
            with store.open_input_file(folder, part.name) as f:
                table = pq.read_table(f, columns=list(columns) if columns else None)
        except (OSError, pa.ArrowException) as exc:
            quarantine_part(store, folder, part.name, reason=str(exc))
            return None
        if table.num_rows != part.rows:
            quarantine_part(store, folder, part.name,
                            reason=f"{table.num_rows} rows, name says {part.rows}")
            return None
        return table

    with ThreadPoolExecutor(READ_THREADS) as pool:
        tables = [t for t in pool.map(read, parts) if t is not None]
    if not tables:
        return read_parts(store, folder, columns, parts=[], schema=schema)
    return pa.concat_tables(tables, promote_options="permissive")
