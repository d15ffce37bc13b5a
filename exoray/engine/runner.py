"""The one runner that turns a :class:`~exoray.engine.spec.PhaseSpec` into a Ray Data pipeline.

``pipelines/<phase>.py`` only declares outputs, options and stages; the lease, the todo list, the
Ray pipeline (pools, fractional resources, blocks), progress and the run log live here once.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import logging
import os
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from exoray.engine.done import done_keys, error_keys, pending_mask, present_images
from exoray.engine.events import read_events
from exoray.engine.part_plan import block_sizes
from exoray.engine.progress import CountedStage, ProcessedCounter, ProgressMonitor
from exoray.engine.runlog import RunRecord, new_run_id, now_utc, read_runs
from exoray.engine.spec import PhaseSpec, StageContext, Target
from exoray.engine.worker_errors import user_facing
from exoray.image.manifest import manifest_root, read_manifest
from exoray.storage import layout
from exoray.storage.lease import LeaseKeeper, take_lease
from exoray.storage.parts import sweep
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
    memory: int | None = None  # bytes, for model actors: keeps Ray's memory hints quiet


@dataclass(frozen=True)
class RunResult:
    run_id: str | None
    phase: str
    todo: int
    processed: int
    errors: int
    seconds: float
    events: list[dict[str, Any]] = field(default_factory=list)
    eta_seconds: float | None = None
    estimate_only: bool = False
    eta_source: str = ""  # where the rate came from: "the last run's rate", "a timed batch", ...
    stopped: str = ""  # why a --max-minutes run ended before its todo list: "planned", "time"

    def eta_text(self) -> str:
        if self.eta_seconds is None:
            return "no earlier run to estimate the time from"
        minutes = self.eta_seconds / 60
        span = f"{minutes:.1f} min" if minutes < 120 else f"{minutes / 60:.1f} h"
        return f"about {span} ({self.eta_source})"

    @property
    def images_per_s(self) -> float:
        return (self.processed + self.errors) / self.seconds if self.seconds > 0 else 0.0

    def __str__(self) -> str:
        if self.estimate_only:
            return f"{self.phase}: {self.todo} images to do; {self.eta_text()}"
        if self.run_id is None:
            return f"{self.phase}: nothing to do (every image is done or has a permanent error)"
        text = (f"{self.phase}: {self.processed} images done, {self.errors} errors, "
                f"{self.seconds:.1f}s ({self.images_per_s:.1f} images/s), run {self.run_id}")
        if self.stopped:
            left = max(0, self.todo - self.processed - self.errors)
            why = ("planned: what fits the time limit at this phase's rate" if
                   self.stopped == "planned" else "time limit reached; work in flight is redone")
            text += (f"; stopped before the end ({why}): {left} images left, everything done "
                     "is committed; rerun the same command to continue")
        return text


def require_manifest(store: Store) -> pa.Table:
    manifest = read_manifest(store)
    if manifest is None:
        raise FileNotFoundError(
            f"no manifest in {store.location}; run `exoray manifest {store.location} --images DIR` "
            "first")
    return manifest


def compute_todo(store: Store, spec: PhaseSpec, targets: list[Target], *, retry_errors: bool,
                 quarantine: bool = False, subset: str | None = None) -> pa.Table:
    """Present images (of ``subset``) that still miss at least one target, with a
    ``need_<label>`` flag each."""
    images = present_images(require_manifest(store)).select(["image_id", "relpath", "fingerprint"])
    if subset:
        from exoray.engine.subsets import subset_mask

        images = images.filter(subset_mask(store, subset, images))
    failed = pa.array([], pa.string()) if retry_errors else error_keys(store, spec.name)
    any_need = None
    for target in targets:
        done = done_keys(store, target.folder, quarantine=quarantine,
                         version=target.output.version)
        stale = spec.stale(store, target) if spec.stale is not None else None
        if stale is not None and len(stale) and len(done):
            done = done.filter(pc.invert(pc.is_in(done, value_set=stale)))
        mask = pending_mask(images, pa.concat_arrays([done, failed]))
        images = images.append_column(target.need_column, mask)
        any_need = mask if any_need is None else pc.or_(any_need, mask)
    return images.filter(any_need) if any_need is not None else images


def session_rate(store: Store, phase: str, folders: list[str]) -> float | None:
    """Images/s over every earlier run that wrote these folders, killed runs included (what a
    --max-minutes run plans with)."""
    from exoray.engine.budget import phase_rate

    runs = read_runs(store)
    rates = [phase_rate(store, runs, phase, f, layout.errors_folder(phase)).images_per_s
             for f in folders]
    known = [r for r in rates if r]
    return min(known) if known else None


def last_rate(store: Store, phase: str, folders: list[str] | None = None) -> float | None:
    """Images/s of the newest finished run of ``phase`` that wrote all of ``folders`` (the same
    model ids: a run of another model says nothing about this one's speed)."""
    runs = read_runs(store)
    runs = runs.filter(pc.and_(pc.equal(runs["phase"], phase), pc.is_valid(runs["images_per_s"])))
    for row in reversed(runs.select(["targets", "images_per_s", "processed"]).to_pylist()):
        if folders and not set(folders) <= set(row["targets"] or []):
            continue
        if row["images_per_s"] and row["processed"]:
            return row["images_per_s"]
    return None


def estimate_run(store: Store, spec: PhaseSpec, targets: list[Target], opts: dict[str, Any],
                 pending: pa.Table) -> RunResult:
    """What is left and how long it should take: the last run of the same model(s) on this
    BASE, else a short timed batch on this machine (for phases that can calibrate)."""
    rate = last_rate(store, spec.name, [t.folder for t in targets])
    source = "at the last run's rate"
    if rate is None and spec.calibrate is not None and pending.num_rows:
        seconds = spec.calibrate(store, targets, opts, pending.slice(0, 16))
        if seconds:
            rate, source = 1 / seconds, f"model time of a timed batch here: {seconds:.2f} s/image"
    return RunResult(None, spec.name, pending.num_rows, 0, 0, 0.0, estimate_only=True,
                     eta_seconds=pending.num_rows / rate if rate else None, eta_source=source)


def run_phase(spec: PhaseSpec, base: str | os.PathLike[str], *, retry_errors: bool = False,
              part_rows: int | None = None, estimate: bool = False, subset: str | None = None,
              show_progress: bool = True, max_minutes: float | None = None,
              executor: str = "auto", **options: Any) -> RunResult:
    """Run ``spec`` on every image (of ``subset``, a flag expression such as ``"photo and not
    dark"``) not done yet; safe to kill and rerun at any instant. ``max_minutes`` stops the run
    by then (planned from the phase's rate, else stopped at the limit), everything committed.
    ``executor``: "ray" (the Ray Data pipeline), "local" (a process pool on this machine, for
    CPU phases) or "auto": local for small CPU runs while Ray is not running, else Ray."""
    from exoray.engine.budget import HardStop, check_max_minutes, planned_images
    from exoray.engine.executors import check_executor

    hard_stop = HardStop(check_max_minutes(max_minutes))
    part_rows = spec.default_part_rows if part_rows is None else part_rows
    if isinstance(part_rows, bool) or not isinstance(part_rows, int) or part_rows < 1:
        raise ValueError(f"part_rows must be a positive integer, got {part_rows!r}")
    check_executor(spec, executor)
    opts = spec.resolve_options(options)
    store = Store(base)
    if not store.exists(layout.MANIFEST):  # compute_todo reads it; no second read here
        require_manifest(store)
    targets = spec.resolve(store, opts)
    if estimate:
        pending = compute_todo(store, spec, targets, retry_errors=retry_errors, subset=subset)
        return estimate_run(store, spec, targets, opts, pending)
    run_id = new_run_id()
    take_lease(store, spec.name, run_id)
    with LeaseKeeper(store, spec.name, run_id):
        # Holding the lease: temporaries in our own folders are a killed run's leftovers.
        for folder in [*(t.folder for t in targets), layout.errors_folder(spec.name)]:
            sweep(store, folder)
        pending = compute_todo(store, spec, targets, retry_errors=retry_errors, quarantine=True,
                               subset=subset)
        if pending.num_rows == 0:
            return RunResult(None, spec.name, 0, 0, 0, 0.0)
        planned, total = None, pending.num_rows
        if hard_stop.minutes is not None:
            planned = planned_images(hard_stop.minutes, session_rate(
                store, spec.name, [t.folder for t in targets]), part_rows)
            if planned is not None and planned < pending.num_rows:
                if show_progress:
                    print(f"{spec.name}: {planned} of {pending.num_rows} images fit in "
                          f"{hard_stop.minutes:g} min at this phase's rate; the rest is for the "
                          "next run", file=sys.stderr)
                pending = pending.slice(0, planned)
            else:
                planned = None
        if show_progress:
            rate = last_rate(store, spec.name, [t.folder for t in targets])
            eta = RunResult(None, spec.name, pending.num_rows, 0, 0, 0.0, estimate_only=True,
                            eta_seconds=pending.num_rows / rate if rate else None,
                            eta_source="at the last run's rate")
            print(f"{eta}{' of subset ' + repr(subset) if subset else ''}", file=sys.stderr)
        pending = pending.append_column("run_id", pa.array([run_id] * pending.num_rows,
                                                           pa.string()))
        result = _execute(spec, store, run_id, pending, targets, opts, part_rows=part_rows,
                          show_progress=show_progress, hard_stop=hard_stop,
                          executor=executor,
                          record_options={**opts, "retry_errors": retry_errors,
                                          "part_rows": part_rows, "subset": subset,
                                          "max_minutes": hard_stop.minutes})
        if planned is not None and not result.stopped:
            result = dataclasses.replace(result, stopped="planned")
        if result.stopped:
            result = dataclasses.replace(result, todo=total)
    if spec.finish is not None:
        spec.finish(store)
    return result


def _stop_actor(ray: Any, actor: Any) -> None:
    """End a helper actor and wait (briefly) until it is gone: a ``ray.kill`` still pending when
    the command exits made Ray's GCS print "Failed to kill actor" on the user's terminal."""
    try:
        ray.wait([actor.__ray_terminate__.remote()], timeout=5)
    except Exception as exc:  # noqa: BLE001 - already gone: nothing left to stop
        log.debug("actor already stopped: %s", exc)


def _blocks(table: pa.Table, sizes: list[int]) -> list[pa.Table]:
    starts = itertools.accumulate(sizes, initial=0)
    return [table.slice(start, size) for start, size in zip(starts, sizes, strict=False)]


def _execute(spec: PhaseSpec, store: Store, run_id: str, todo: pa.Table, targets: list[Target],
             opts: dict[str, Any], *, part_rows: int, show_progress: bool,
             record_options: dict[str, Any], hard_stop: Any = None,
             executor: str = "auto") -> RunResult:
    if spec.compute is not None:
        from exoray.engine.columnar import execute_columnar

        return execute_columnar(spec, store, run_id, todo, targets, opts, part_rows=part_rows,
                                show_progress=show_progress, record_options=record_options)
    from exoray.engine.executors import choose_executor
    from exoray.engine.local_pool import execute_local

    if choose_executor(spec, executor, todo.num_rows) == "local":
        return execute_local(spec, store, run_id, todo, targets, opts, part_rows=part_rows,
                             show_progress=show_progress, record_options=record_options,
                             hard_stop=hard_stop)
    import ray
    import ray.data
    from ray.data import ActorPoolStrategy, DataContext

    from exoray.engine.budget import interrupt_status
    from exoray.engine.ray_runtime import ensure_ray
    from exoray.engine.sink import make_part_sink

    shape = ensure_ray()
    ctx = StageContext(store=store, run_id=run_id, image_root=manifest_root(store) or "",
                       targets=targets, options=opts, cpus=shape.cpus, gpus=shape.gpus)
    stages: list[Stage] = spec.stages(ctx)
    counter_name = f"exoray-processed-{run_id}"
    counter = ray.remote(num_cpus=0)(ProcessedCounter).options(name=counter_name).remote()
    last = stages[-1]
    stages[-1] = Stage(last.name, CountedStage,
                       {"inner": last.fn, "inner_kwargs": last.constructor_kwargs,
                        "counter": counter_name},
                       batch_size=last.batch_size, pool_size=last.pool_size,
                       num_cpus=last.num_cpus, num_gpus=last.num_gpus,
                       batch_format=last.batch_format, memory=last.memory)
    record = RunRecord(run_id=run_id, phase=spec.name, started_at=now_utc(), todo=todo.num_rows,
                       targets=[t.folder for t in targets],
                       options={**record_options, "executor": "ray"},
                       model_id=",".join(t.model_id for t in targets if t.model_id) or None)
    record.record_start(store)
    folders = [t.folder for t in targets]
    started = time.perf_counter()
    status = "failed"
    try:
        data_ctx = DataContext.get_current()
        data_ctx.enable_progress_bars = False  # our bar counts committed rows, what matters
        data_ctx.print_on_execution_start = False
        first = stages[0]
        # A small first block (the first part), then up to a part's worth of rows per block
        # (few blocks: Ray's per-block driver state is what grows with the image count).
        sizes = block_sizes(todo.num_rows, part_rows, first.batch_size, first.pool_size)
        blocks = _blocks(todo, sizes)
        ds = ray.data.from_arrow(blocks)
        for stage in stages:
            extra = {"memory": stage.memory} if stage.memory else {}
            # Every actor the run will use starts at once: an actor Ray Data adds late is often
            # still being created when the run ends, and cancelling it made Ray's GCS print
            # "Failed to kill actor ... Socket closed" on the user's terminal.
            size = max(1, min(stage.pool_size, len(blocks)))
            ds = ds.map_batches(
                stage.fn, fn_constructor_kwargs=stage.constructor_kwargs,
                batch_size=stage.batch_size, batch_format=stage.batch_format,
                compute=ActorPoolStrategy(min_size=1, max_size=size, initial_size=size),
                num_cpus=stage.num_cpus, num_gpus=stage.num_gpus or None, **extra)
        sink = make_part_sink(store.location, spec.name, run_id, targets, sizes[0])
        with ProgressMonitor(store, folders, layout.errors_folder(spec.name), run_id,
                             todo.num_rows, spec.name, enabled=show_progress,
                             processed=lambda: ray.get(counter.value.remote(), timeout=2)):
            try:
                with hard_stop or contextlib.nullcontext():
                    ds.write_datasink(sink, ray_remote_args={"num_cpus": 0.1})
            except Exception as exc:  # noqa: BLE001 - re-raised as the one-line user error
                raise user_facing(exc) from exc
        status = "completed"
    except KeyboardInterrupt:
        status = interrupt_status(hard_stop)
        if status == "interrupted":
            raise
    finally:
        _stop_actor(ray, counter)
        record.events = read_events(store, run_id)
        record.record_outcome(store, status)
    return RunResult(run_id, spec.name, todo.num_rows, record.processed, record.errors,
                     time.perf_counter() - started, record.events,
                     stopped="time" if status == "stopped" else "")
