"""PartSink: the Ray Data datasink every phase writes through.

Ray bundles at least ``min_rows`` rows per write task (``min_rows_per_write``: the size of the
run's first block, so that block is the first part, see :mod:`exoray.engine.part_plan`); each splits
its rows into one table per target plus error rows and publishes each as one verified part via
:func:`exoray.storage.parts.write_part`. Part names are content-derived, so a write task that Ray
retries after its worker died republishes the same names. Ray's own ``write_parquet`` is never
pointed at BASE: it writes final names directly and its overwrite mode deletes the folder.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from exoray.engine import failpoints
from exoray.engine.errors_table import error_rows
from exoray.engine.schemas import ERROR_SCHEMA, ERRORS_KEY, failed_mask
from exoray.engine.spec import Target
from exoray.storage import layout
from exoray.storage.lease import Fence
from exoray.storage.parts import write_part
from exoray.storage.store import Store


def _block_to_arrow(block: Any) -> pa.Table:
    if isinstance(block, pa.Table):
        return block
    return pa.Table.from_pandas(block, preserve_index=False)


def target_rows(table: pa.Table, target: Target) -> pa.Table:
    """The target's output columns from stage rows: ``prefix+name`` wins over ``name``."""
    if target.convert is not None:
        return target.convert(table, target)
    columns, names = [], []
    for name in target.output.schema.names:
        source = target.prefix + name if target.prefix + name in table.column_names else name
        if source in table.column_names:
            columns.append(table[source])
            names.append(name)
    return pa.table(columns, names=names)


class TargetSplitter:
    """Stage rows → {folder: rows} for every target that needed them, failed rows → errors."""

    def __init__(self, phase: str, targets: list[Target]) -> None:
        self.phase, self.targets = phase, targets

    def __call__(self, table: pa.Table) -> tuple[dict[str, pa.Table], pa.Table | None]:
        failed = failed_mask(table)
        ok = table.filter(pc.invert(failed))
        outputs = {}
        for target in self.targets:
            rows = ok
            if target.need_column in ok.column_names:
                rows = ok.filter(pc.fill_null(pc.cast(ok[target.need_column], pa.bool_()), False))
            if rows.num_rows:
                outputs[target.folder] = target_rows(rows, target)
        bad = table.filter(failed)
        return outputs, (error_rows(bad, self.phase) if bad.num_rows else None)


def publish_rows(store: Store, table: pa.Table, *, phase: str, run_id: str,
                 targets: list[Target], fence: Callable[[], None] | None = None
                 ) -> dict[str, int]:
    """Split one bundle of rows and publish each piece as a part; returns rows per folder.

    Errors are published first: if the process dies between publishes, the successful images
    are simply redone (or, on a Ray retry, republished under the same names).
    """
    outputs, errors = TargetSplitter(phase, targets)(table)
    by_folder = {t.folder: t for t in targets}
    written: dict[str, int] = {}
    if errors is not None and errors.num_rows:
        folder = layout.errors_folder(phase)
        write_part(store, folder, errors, run_id=run_id, key=ERRORS_KEY, schema=ERROR_SCHEMA,
                   before_publish=fence)
        written[folder] = errors.num_rows
        failpoints.hit("between_publishes")
    for i, (folder, part) in enumerate(outputs.items()):
        target = by_folder[folder]
        write_part(store, folder, part, run_id=run_id, key=target.output.key,
                   schema=target.output.schema, before_publish=fence)
        written[folder] = part.num_rows
        if i < len(outputs) - 1:
            failpoints.hit("between_publishes")
    return written


_SINK_CLASS: type | None = None


def make_part_sink(store_location: str, phase: str, run_id: str, targets: list[Target],
                   min_rows: int) -> Any:
    """A Ray Datasink publishing atomic parts (Ray imported lazily: models never need it)."""
    global _SINK_CLASS
    if _SINK_CLASS is None:
        from ray.data import Datasink

        class _PartSink(Datasink):
            def __init__(self, store_location: str, phase: str, run_id: str,
                         targets: list[Target], min_rows: int) -> None:
                self.store_location, self.phase, self.run_id = store_location, phase, run_id
                self.targets, self.min_rows = targets, min_rows

            @property
            def min_rows_per_write(self) -> int:
                return self.min_rows

            def get_name(self) -> str:
                return "PublishParts"

            def write(self, blocks: Iterable[Any], ctx: Any) -> dict[str, int]:
                tables = [t for t in map(_block_to_arrow, blocks) if t.num_rows]
                if not tables:
                    return {}
                table = pa.concat_tables(tables, promote_options="permissive")
                store = Store(self.store_location)
                return publish_rows(store, table, phase=self.phase, run_id=self.run_id,
                                    targets=self.targets,
                                    fence=Fence(store, self.phase, self.run_id))

        _SINK_CLASS = _PartSink
    return _SINK_CLASS(store_location, phase, run_id, targets, min_rows)
