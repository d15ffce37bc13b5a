"""Columnar phases: they read columns (features, embeddings, flags), not images, so they compute
in the driver, chunk by chunk, and publish through the same parts, fence and run log as Ray
phases. Starting Ray would cost more than the work."""

from __future__ import annotations

import os
import time
from typing import Any

import pyarrow as pa

from exoray.engine.progress import ProgressMonitor
from exoray.engine.runlog import RunRecord, now_utc
from exoray.engine.sink import publish_rows
from exoray.engine.spec import PhaseSpec, StageContext, Target
from exoray.image.manifest import manifest_root
from exoray.storage import layout
from exoray.storage.lease import Fence
from exoray.storage.store import Store


def execute_columnar(spec: PhaseSpec, store: Store, run_id: str, todo: pa.Table,
                     targets: list[Target], opts: dict[str, Any], *, part_rows: int,
                     show_progress: bool, record_options: dict[str, Any]) -> Any:
    from exoray.engine.runner import RunResult

    if spec.compute is None:
        raise ValueError(f"phase {spec.name!r} has no compute function")
    ctx = StageContext(store=store, run_id=run_id, image_root=manifest_root(store) or "",
                       targets=targets, options=opts, cpus=float(os.cpu_count() or 1), gpus=0.0)
    record = RunRecord(run_id=run_id, phase=spec.name, started_at=now_utc(), todo=todo.num_rows,
                       targets=[t.folder for t in targets], options=record_options)
    record.record_start(store)
    folders = [t.folder for t in targets]
    started = time.perf_counter()
    status = "failed"
    fence = Fence(store, spec.name, run_id, check_orphan=False)
    try:
        with ProgressMonitor(store, folders, layout.errors_folder(spec.name), run_id,
                             todo.num_rows, spec.name, enabled=show_progress):
            # One vectorised pass over all the todo rows (seconds, even for 1M images), then
            # parts of part_rows rows: per-part passes repeated collection-wide work.
            rows = spec.compute(ctx, todo)
            for start in range(0, rows.num_rows, part_rows):
                publish_rows(store, rows.slice(start, part_rows), phase=spec.name,
                             run_id=run_id, targets=targets, fence=fence)
        status = "completed"
    except KeyboardInterrupt:
        status = "interrupted"
        raise
    finally:
        record.record_outcome(store, status)
    return RunResult(run_id, spec.name, todo.num_rows, record.processed, record.errors,
                     time.perf_counter() - started)

