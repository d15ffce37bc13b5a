"""The commit protocol: the only code that writes or reads phase parts in BASE.

A phase output folder holds ``part-<run_id>-<digest>-n<rows>.parquet`` files. The digest is a hash
of the part's sorted keys, so a write task that Ray retries (after a worker died between two
publishes) republishes the *same* name instead of a second copy. A part is written on local disk,
closed, re-opened to check its footer and row count, then published (copy to a hidden temporary
name + rename; one put on object stores). Readers only ever see final names, and deduplicate by the
phase key (newest run wins), so a duplicate from a race the lease did not fence never reaches a
user. The row count in the name lets ``exoray status`` count work without opening files.
"""

from __future__ import annotations

import hashlib
import logging
import re
import socket
import sys
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from exoray.storage.staging import staging_file
from exoray.storage.store import Store

log = logging.getLogger(__name__)

# New names: part-<run>-<16 hex digest>-n<rows>; legacy names also carry a 5-digit task number.
PART_RE = re.compile(
    r"^part-(?P<run>[0-9A-Za-z_]+)-(?:(?P<task>\d{5})-)?(?P<seq>[0-9a-f]+)-n(?P<rows>\d+)\.parquet$")
TMP_PREFIX = ".tmp-"
QUARANTINE = "quarantine"
READ_THREADS = 16  # parallel part reads: Drive/S3 latency, not CPU, bounds these
DIGEST_CHARS = 16
WRITER_HOST, WRITER_NODE = b"exoray.writer_host", b"exoray.writer_ray_node"


class PartError(RuntimeError):
    """A part failed verification before publication (nothing was published)."""


class SchemaError(ValueError):
    """Rows handed to :func:`write_part` do not match the output's declared schema."""


class PartReadError(OSError):
    """A part could not be read for a reason that may pass (I/O, network): nothing is quarantined."""


@dataclass(frozen=True)
class PartInfo:
    """A published part, described by its name alone."""

    name: str
    run_id: str
    digest: str
    rows: int
    size: int


def part_name(run_id: str, digest: str, rows: int) -> str:
    return f"part-{run_id}-{digest}-n{rows}.parquet"


def parse_part_name(name: str) -> tuple[str, str, int] | None:
    """(run_id, digest, rows) for a final part name, None for anything else."""
    m = PART_RE.match(name)
    if not m:
        return None
    return m["run"], m["seq"], int(m["rows"])


def key_strings(table: pa.Table, key: Sequence[str]) -> pa.ChunkedArray | pa.Array:
    """One string per row joining the ``key`` columns with ``|`` (the unit of exactly-once)."""
    if len(key) == 1:
        return pc.cast(table[key[0]], pa.string())
    return pc.binary_join_element_wise(*[pc.cast(table[k], pa.string()) for k in key], "|")


def content_digest(table: pa.Table, key: Sequence[str]) -> str:
    """Hash of the sorted keys of ``table``: the same rows give the same part name on a retry."""
    keys = key_strings(table, key)
    keys = keys.combine_chunks() if isinstance(keys, pa.ChunkedArray) else keys
    ordered = pc.take(keys, pc.sort_indices(keys)).to_pylist()
    h = hashlib.blake2b(digest_size=DIGEST_CHARS // 2)
    for k in ordered:
        h.update(str(k).encode())
        h.update(b"\n")
    return h.hexdigest()


def _same_list_kind(have: pa.DataType, want: pa.DataType) -> bool:
    """A fixed-size list satisfies a list of the same value type (vector dims differ by model)."""
    return (pa.types.is_fixed_size_list(have) and pa.types.is_list(want)
            and have.value_type == want.value_type)


def conform(table: pa.Table, schema: pa.Schema, *, where: str) -> pa.Table:
    """``table`` with exactly ``schema``'s columns, in order, cast to its types."""
    missing = [n for n in schema.names if n not in table.column_names]
    if missing:
        raise SchemaError(f"rows for {where} miss columns {missing} (have {table.column_names}); "
                          "the phase's stage and its output schema disagree")
    columns = []
    for field in schema:
        col = table[field.name]
        if col.type != field.type and not _same_list_kind(col.type, field.type):
            try:
                col = col.cast(field.type)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
                raise SchemaError(f"column {field.name!r} for {where} has type {col.type}, "
                                  f"expected {field.type}: {exc}") from exc
        columns.append(col)
    return pa.table(columns, names=schema.names)


def write_part(
    store: Store,
    folder: str,
    table: pa.Table,
    *,
    run_id: str,
    key: Sequence[str],
    schema: pa.Schema | None = None,
    staging_dir: str | None = None,
    compression: str = "zstd",
    before_publish: Callable[[], None] | None = None,
) -> PartInfo:
    """Stage ``table`` locally, verify it, publish it into ``folder`` under a content name.

    Raises :class:`PartError` if the staged file does not read back with the same row count;
    then nothing reaches BASE. ``before_publish`` runs last, right before the publish, and may
    raise to withhold the part (see :mod:`exoray.storage.lease`). Publishing a name that is
    already there (a retried task) is skipped: the content is the same rows.
    """
    if table.num_rows == 0:
        raise ValueError(f"refusing to publish an empty part into {folder!r}")
    if schema is not None:
        table = conform(table, schema, where=folder)
    name = part_name(run_id, content_digest(table, key), table.num_rows)
    with staging_file(suffix=".parquet", staging_dir=staging_dir) as local:
        pq.write_table(table.replace_schema_metadata({**(table.schema.metadata or {}),
                                                      **writer_metadata()}),
                       local, compression=compression)
        meta = pq.ParquetFile(local).metadata
        if meta.num_rows != table.num_rows:
            raise PartError(
                f"staged part {name} reads back {meta.num_rows} rows, expected {table.num_rows}; "
                "check free space on the local disk (EXORAY_STAGING)"
            )
        if before_publish is not None:
            before_publish()
        if not store.exists(folder, name):
            store.publish_file(local, folder, name)
    return PartInfo(name, run_id, name.split("-")[-2], table.num_rows, store.size(folder, name))


def writer_metadata() -> dict[bytes, bytes]:
    """Who wrote a part (host, and the Ray node inside a Ray worker), kept in its footer.

    Not part of the name: a retry on another node republishes the same name. It shows how a
    cluster spread the work (:func:`part_writers`) and where a late writer came from.
    """
    meta = {WRITER_HOST: socket.gethostname().encode()}
    ray = sys.modules.get("ray")  # never import Ray here: models and tests run without it
    if ray is not None and ray.is_initialized():
        meta[WRITER_NODE] = ray.get_runtime_context().get_node_id().encode()
    return meta


def part_writers(store: Store, folder: str) -> dict[str, int]:
    """Parts of ``folder`` per writer (Ray node id, else host): reads footers only."""
    def writer(part: PartInfo) -> str:
        with store.open_input_file(folder, part.name) as f:
            meta = pq.read_metadata(f).metadata or {}
        return (meta.get(WRITER_NODE) or meta.get(WRITER_HOST) or b"unknown").decode()

    with ThreadPoolExecutor(READ_THREADS) as pool:
        return dict(Counter(pool.map(writer, list_parts(store, folder))))


def list_parts(store: Store, folder: str) -> list[PartInfo]:
    """Published parts of ``folder`` in name order, so oldest run first (temporaries never)."""
    parts = []
    for entry in store.list_files(folder, suffix=".parquet"):
        parsed = parse_part_name(entry.relpath)
        if parsed is not None:
            run_id, digest, rows = parsed
            parts.append(PartInfo(entry.relpath, run_id, digest, rows, entry.size))
    return parts


def temporaries(store: Store, folder: str) -> list[str]:
    """Leftover hidden temporaries of interrupted publishes in ``folder``."""
    return [e.relpath for e in store.list_files(folder) if e.relpath.startswith(TMP_PREFIX)]


def sweep(store: Store, folder: str) -> int:
    """Start-of-run clean-up of one folder the sweeping phase owns: delete its temporaries.

    Call it only while holding the phase's lease, and only on that phase's own folders: a
    temporary there belongs to a killed run of the same phase. Returns how many were removed.
    """
    names = temporaries(store, folder)
    for name in names:
        store.delete(folder, name)
    return len(names)


def quarantine_part(store: Store, folder: str, name: str, *, reason: str) -> None:
    log.warning("quarantining %s/%s (%s); its images will be processed again", folder, name, reason)
    store.move((folder, name), (QUARANTINE, folder, name))


def deduplicate(table: pa.Table, key: Sequence[str]) -> pa.Table:
    """One row per key, the last one in ``table`` (parts are read oldest run first)."""
    if table.num_rows < 2:
        return table
    keys = table.select(list(key)).append_column(
        "__row", pa.array(np.arange(table.num_rows, dtype=np.int64)))
    last = keys.group_by(list(key), use_threads=False).aggregate([("__row", "max")])["__row_max"]
    if len(last) == table.num_rows:
        return table
    return table.take(pc.take(last, pc.sort_indices(last)))  # kept rows, in read order


def read_part(store: Store, folder: str, part: PartInfo, columns: list[str] | None,
              schema: pa.Schema | None = None) -> pa.Table | str:
    """The part's rows, or a reason string if the part is really corrupt.

    A wanted column the part predates (written before the column existed) comes back as nulls
    of its ``schema`` type: an older part is never taken for a corrupt one.
    I/O failures (Drive hiccups, network) raise :class:`PartReadError`: a part is never
    quarantined because a read failed once.
    """
    try:
        with store.open_input_file(folder, part.name) as f:
            parquet = pq.ParquetFile(f)
            present = set(parquet.schema_arrow.names)
            table = parquet.read(columns=None if columns is None else
                                 [c for c in columns if c in present])
            if columns is not None and any(c not in present for c in columns):
                table = _with_columns(table, columns, schema)
    except FileNotFoundError as exc:
        raise PartReadError(f"part {folder}/{part.name} vanished while reading ({exc}); is "
                            "another process compacting this BASE? rerun the command") from exc
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:  # bad footer / bytes
        return f"unreadable: {exc}"
    except OSError as exc:
        raise PartReadError(f"could not read {folder}/{part.name} ({exc}); the storage may be "
                            "slow or offline: rerun the command") from exc
    if table.num_rows != part.rows:
        return f"{table.num_rows} rows, name says {part.rows}"
    return table


def _with_columns(table: pa.Table, columns: list[str], schema: pa.Schema | None) -> pa.Table:
    """``table`` with every one of ``columns``, in that order; missing ones all null."""
    def column(name: str) -> pa.Array | pa.ChunkedArray:
        if name in table.column_names:
            return table[name]
        kind = schema.field(name).type if schema is not None and name in schema.names \
            else pa.null()
        return pa.nulls(table.num_rows, kind)

    return pa.table([column(c) for c in columns], names=columns)


def read_parts(
    store: Store,
    folder: str,
    columns: Sequence[str] | None = None,
    *,
    key: Sequence[str] | None = None,
    parts: Sequence[PartInfo] | None = None,
    schema: pa.Schema | None = None,
    quarantine: bool = False,
) -> pa.Table:
    """Published parts of ``folder`` as one table (only ``columns``), one row per ``key``.

    A really corrupt part is skipped with a warning, and moved to ``quarantine/`` only when
    ``quarantine`` is set (a run's start, holding the lease); a transient read error raises
    :class:`PartReadError` and never quarantines anything.
    """
    parts = list_parts(store, folder) if parts is None else list(parts)
    wanted = list(columns) if columns is not None else None
    read_cols = wanted
    if wanted is not None and key is not None:
        read_cols = list(dict.fromkeys([*wanted, *key]))
    if not parts:
        return _empty(schema, wanted)

    def read(part: PartInfo) -> pa.Table | None:
        got = read_part(store, folder, part, read_cols, schema)
        if isinstance(got, str):
            if quarantine:
                quarantine_part(store, folder, part.name, reason=got)
            else:
                log.warning("skipping part %s/%s (%s); `exoray doctor --fix` quarantines it",
                            folder, part.name, got)
            return None
        return got

    with ThreadPoolExecutor(READ_THREADS) as pool:
        tables = [t for t in pool.map(read, parts) if t is not None]
    if not tables:
        return _empty(schema, wanted)
    table = pa.concat_tables(tables, promote_options="permissive")
    if key is not None:
        table = deduplicate(table, key)
        if wanted is not None:
            table = table.select(wanted)
    return table


def _empty(schema: pa.Schema | None, columns: list[str] | None) -> pa.Table:
    if schema is not None:
        if columns is None:
            return schema.empty_table()
        return pa.schema([schema.field(c) if c in schema.names else pa.field(c, pa.string())
                          for c in columns]).empty_table()
    return pa.table({c: pa.array([], pa.string()) for c in (columns or [])})
