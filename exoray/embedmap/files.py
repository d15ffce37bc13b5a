"""The map on disk: ``maps/<model>.json`` names the build, ``maps/<model>/<build>/map.parquet``.

The parquet file is staged locally, checked, and published into a fresh build folder; the
pointer ``maps/<model>.json`` (the map's record: method, sample, counts, embeddings it came
from) is published last, atomically. A reader follows the pointer, so a run killed at any
instant leaves the previous map (or none), never a torn one. The build the old pointer named is
kept until the next build, for a reader that read the pointer a moment before.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from exoray.storage.parts import TMP_PREFIX
from exoray.storage.staging import staging_file
from exoray.storage.store import Store

MAPS = "maps"
MAP_FILE = "map.parquet"
MAP_SCHEMA = pa.schema([
    pa.field("image_id", pa.string()),
    pa.field("x", pa.float32()),
    pa.field("y", pa.float32()),
    pa.field("fitted", pa.bool_()),
])


def pointer_path(family: str) -> str:
    return f"{MAPS}/{family}.json"


def read_pointer(store: Store, family: str) -> dict[str, Any] | None:
    """The map record of ``family`` (e.g. ``clip``), or None when no map was built."""
    if not store.exists(pointer_path(family)):
        return None
    return json.loads(store.read_bytes(pointer_path(family)))


def map_table(ids: list[str], xy: np.ndarray, fitted: np.ndarray) -> pa.Table:
    return pa.table({"image_id": pa.array(ids, pa.string()),
                     "x": pa.array(xy[:, 0], pa.float32()),
                     "y": pa.array(xy[:, 1], pa.float32()),
                     "fitted": pa.array(fitted, pa.bool_())}, schema=MAP_SCHEMA)


def publish_map(store: Store, family: str, build: str, table: pa.Table) -> str:
    """Stage, verify and publish the table into its build folder; returns its path in BASE."""
    path = f"{MAPS}/{family}/{build}/{MAP_FILE}"
    with staging_file(suffix="-" + MAP_FILE) as local:
        pq.write_table(table, local, compression="zstd")
        rows = pq.ParquetFile(local).metadata.num_rows
        if rows != table.num_rows:
            raise OSError(f"staged map reads back {rows} rows, expected {table.num_rows}; check "
                          "free space on the local disk (EXORAY_STAGING)")
        store.publish_file(local, path)
    return path


def publish_pointer(store: Store, family: str, record: dict[str, Any]) -> None:
    store.write_bytes_atomic(json.dumps(record, indent=2).encode(), pointer_path(family))


def remove_old_builds(store: Store, family: str, keep: set[str]) -> int:
    """Delete build folders other than ``keep`` (a killed run's orphan included) and the
    temporaries a killed publish of this family's pointer left; returns how many went."""
    removed = 0
    for build in sorted({e.relpath.split("/", 1)[0]
                         for e in store.list_files(f"{MAPS}/{family}", recursive=True)}):
        if build not in keep:
            store.delete(MAPS, family, build)
            removed += 1
    for entry in store.list_files(MAPS):
        if entry.relpath.startswith(TMP_PREFIX) and entry.relpath.endswith(f"-{family}.json"):
            store.delete(MAPS, entry.relpath)
            removed += 1
    return removed


def read_map_file(store: Store, path: str) -> pa.Table:
    try:
        with store.open_input_file(path) as f:
            return pq.read_table(f, schema=MAP_SCHEMA)
    except FileNotFoundError as exc:
        raise FileNotFoundError(f"the map file {path} named by its pointer is missing in "
                                f"{store.location}; rebuild it with `exoray map "
                                f"{store.location} --force`") from exc
