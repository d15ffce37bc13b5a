"""PartSink: the Ray Data datasink every phase writes through.

Ray bundles at least ``part_rows`` rows per write task (``min_rows_per_write``); each task splits
its rows into per-folder tables plus error rows and publishes each as one verified part via
:func:`exoray.storage.parts.write_part`. Ray's own ``write_parquet`` is never pointed at BASE: it writes
final names directly and its overwrite mode deletes the folder.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable
from typing import Any

import pyarrow as pa

from exoray.storage import layout
from exoray.storage.lease import Fence
from exoray.storage.parts import write_part
from exoray.storage.store import Store

# splitter(table) -> ({folder: table_to_publish}, errors_table_or_None)
Splitter = Callable[[pa.Table], tuple[dict[str, pa.Table], pa.Table | None]]


def _block_to_arrow(block: Any) -> pa.Table:
    if isinstance(block, pa.Table):
        return block
    return pa.Table.from_pandas(block, preserve_index=False)


def make_part_sink(store_location: str, phase: str, run_id: str, splitter: Splitter,
                   part_rows: int) -> Any:
    """A Ray Datasink publishing atomic parts (Ray imported lazily: models never need it)."""
    return _make_sink_class()(store_location, phase, run_id, splitter, part_rows)


_SINK_CLASS: type | None = None


def _make_sink_class() -> type:
    global _SINK_CLASS
    if _SINK_CLASS is not None:
        return _SINK_CLASS
    from ray.data import Datasink

    class _PartSink(Datasink):
        def __init__(self, store_location: str, phase: str, run_id: str, splitter: Splitter,
                     part_rows: int) -> None:
            self.store_location = store_location
            self.phase = phase
            self.run_id = run_id
            self.splitter = splitter
            self.part_rows = part_rows

        @property
        def min_rows_per_write(self) -> int:
            return self.part_rows

        def get_name(self) -> str:
            return "PublishParts"

        def write(self, blocks: Iterable[Any], ctx: Any) -> dict[str, int]:
            tables = [_block_to_arrow(b) for b in blocks]
            tables = [t for t in tables if t.num_rows]
            if not tables:
                return {}
            table = pa.concat_tables(tables, promote_options="permissive")
            store = Store(self.store_location)
            return publish_rows(store, table, run_id=self.run_id, splitter=self.splitter,
                                task=int(getattr(ctx, "task_idx", 0)),
                                fence=Fence(store, self.phase, self.run_id))

    _SINK_CLASS = _PartSink
    return _SINK_CLASS


def publish_rows(store: Store, table: pa.Table, *, run_id: str, splitter: Splitter,
                 task: int, fence: Callable[[], None] | None = None) -> dict[str, int]:
    """Split one bundle of rows and publish each piece as a part; returns rows per folder.

    Errors are published first: if the process dies between the two publishes, the successful
    images are simply redone, and no image ever ends up both done and failed.
    """
    outputs, errors = splitter(table)
    seq = uuid.uuid4().hex[:8]
    written: dict[str, int] = {}
    if errors is not None and errors.num_rows:
        write_part(store, layout.ERRORS, errors, run_id=run_id, task=task, seq=seq,
                   before_publish=fence)
        written[layout.ERRORS] = errors.num_rows
    for folder, part in outputs.items():
        if part.num_rows:
            write_part(store, folder, part, run_id=run_id, task=task, seq=seq,
                       before_publish=fence)
            written[folder] = part.num_rows
    return written
