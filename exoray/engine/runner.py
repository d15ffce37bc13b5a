"""The one runner that turns a phase's stages and sink into a Ray Data pipeline.

``pipelines/<phase>.py`` only says which stages, which outputs and which options; everything about
Ray (pools, fractional resources, blocks, progress, the run log) lives here once.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from exoray.engine.events import read_events
from exoray.engine.jobs import JobRecord, new_run_id, now_utc, record_job
from exoray.engine.sink import Splitter, make_part_sink
from exoray.storage import layout
from exoray.storage.lease import take_lease
from exoray.storage.parts import list_parts, sweep
from exoray.storage.store import Store

log = logging.getLogger(__name__)

DEFAULT_PART_ROWS = 1000


@dataclass
class Stage:
    """One ``map_batches`` step: a callable class, its constructor kwargs and its resources."""

    name: str
    fn: type
    constructor_kwargs: dict[str, Any]
    batch_size: int
    pool_size: int
    num_cpus: float
    num_gpus: float = 0.0
    batch_format: str = "pyarrow"


@dataclass
class PhaseRun:
    phase: str
    store: Store
    todo: pa.Table
    stages: list[Stage]
    splitter: Splitter
    outputs: list[str]
    run_id: str  # from begin_run(), which took the phase's lease for it
    part_rows: int = DEFAULT_PART_ROWS
    options: dict[str, Any] = field(default_factory=dict)
    model_id: str | None = None
    show_progress: bool = True


@dataclass(frozen=True)
class RunResult:
    run_id: str
    phase: str
    todo: int
    processed: int
    errors: int
    seconds: float
    events: list[dict[str, Any]]

    @property
    def images_per_s(self) -> float:
        return (self.processed + self.errors) / self.seconds if self.seconds > 0 else 0.0

    def __str__(self) -> str:
        return (f"{self.phase}: {self.processed} images done, {self.errors} errors, "
                f"{self.seconds:.1f}s ({self.images_per_s:.1f} images/s), run {self.run_id}")


def begin_run(store: Store, phase: str, folders: list[str]) -> str:
    """Start a run of ``phase``: clean up after killed runs and take the phase's lease.

    Call it before reading what is done: from then on, writers of an earlier (killed) run can
    no longer publish, so the todo list stays true. Parts are verified as the done-set reads them
    (``read_parts``), so the sweep only removes temporaries. Returns the new run id.
    """
    for folder in [*folders, layout.ERRORS]:
        result = sweep(store, folder, verify=False)
        if any(result.values()):
            log.warning("%s: %s", folder, result)
    run_id = new_run_id()
    take_lease(store, phase, run_id)
    return run_id


def rows_of_run(store: Store, folder: str, run_id: str) -> int:
    return sum(p.rows for p in list_parts(store, folder) if p.run_id == run_id)


class ProgressMonitor:
    """Counts committed rows of this run from part names (no file opens) and shows done/ETA."""

    def __init__(self, store: Store, folders: list[str], run_id: str, total: int, label: str,
                 interval: float = 2.0, enabled: bool = True) -> None:
        self.store, self.folders, self.run_id = store, folders, run_id
        self.total, self.label, self.interval, self.enabled = total, label, interval, enabled
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._started = time.perf_counter()
        self._bar: Any = None

    def committed(self) -> int:
        """Images finished: the most-advanced output (each image lands once per output) + errors."""
        done = max((rows_of_run(self.store, f, self.run_id) for f in self.folders), default=0)
        return done + rows_of_run(self.store, layout.ERRORS, self.run_id)

    def __enter__(self) -> ProgressMonitor:
        if self.enabled and self.total:
            from tqdm.auto import tqdm

            self._bar = tqdm(total=self.total, desc=f"{self.label} (committed)", unit="img",
                             file=sys.stderr, dynamic_ncols=True, mininterval=1.0)
            self._thread = threading.Thread(target=self._loop, daemon=True)
            self._thread.start()
        return self

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self._update()

    def _update(self) -> None:
        try:
            done = min(self.committed(), self.total)
        except OSError as exc:  # a transient listing failure on Drive must not kill the run
            log.debug("progress listing failed: %s", exc)
            return
        if self._bar is not None:
            self._bar.update(done - self._bar.n)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._update()
        if self._bar is not None:
            self._bar.close()


def _blocks(table: pa.Table, rows_per_block: int) -> list[pa.Table]:
    return [table.slice(i, rows_per_block) for i in range(0, table.num_rows, rows_per_block)]


def execute(run: PhaseRun) -> RunResult:
    """Run ``run.todo`` through the stages into the outputs; records the run in jobs.parquet."""
    import ray.data
    from ray.data import ActorPoolStrategy, DataContext

    store = run.store
    job = JobRecord(run_id=run.run_id, phase=run.phase, started_at=now_utc(),
                    todo=run.todo.num_rows, options=run.options, model_id=run.model_id)
    record_job(store, job)
    started = time.perf_counter()
    status = "failed"
    try:
        if run.todo.num_rows:
            ctx = DataContext.get_current()
            ctx.enable_progress_bars = False  # our bar counts committed rows, which is what matters
            ctx.print_on_execution_start = False
            first = run.stages[0]
            # Up to a part's worth of rows per block (few blocks: Ray's per-block driver state
            # is what grows with the image count), but at least 4 blocks per actor so all work.
            per_actor = -(-run.todo.num_rows // (4 * first.pool_size))
            rows_per_block = max(first.batch_size, min(run.part_rows, per_actor))
            ds = ray.data.from_arrow(_blocks(run.todo, rows_per_block))
            for stage in run.stages:
                ds = ds.map_batches(
                    stage.fn,
                    fn_constructor_kwargs=stage.constructor_kwargs,
                    batch_size=stage.batch_size,
                    batch_format=stage.batch_format,
                    compute=ActorPoolStrategy(min_size=1, max_size=stage.pool_size),
                    num_cpus=stage.num_cpus,
                    num_gpus=stage.num_gpus or None,
                )
            sink = make_part_sink(store.location, run.phase, run.run_id, run.splitter,
                                  run.part_rows)
            with ProgressMonitor(store, run.outputs, run.run_id,
                                 run.todo.num_rows, run.phase, enabled=run.show_progress):
                ds.write_datasink(sink, ray_remote_args={"num_cpus": 0.1})
        status = "completed"
    except KeyboardInterrupt:
        status = "interrupted"
        raise
    finally:
        job.status = status
        job.finished_at = now_utc()
        job.processed = max(rows_of_run(store, f, run.run_id) for f in run.outputs)
        job.errors = rows_of_run(store, layout.ERRORS, run.run_id)
        job.events = read_events(store, run.run_id)
        record_job(store, job)
    return RunResult(run.run_id, run.phase, run.todo.num_rows, job.processed, job.errors,
                     time.perf_counter() - started, job.events)
