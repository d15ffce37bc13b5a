"""Small CPU runs without Ray: the phase's own stages in a pool of processes on this machine.

Why: on a 2-vCPU runtime Ray's fixed cost (about 3 s ``ray.init``, 2-3 s to plan and start the
actors, 1 s to shut down) is longer than Phase II's whole work on a few thousand images, so a
small folder took longer than a plain script. A phase whose stages are plain CPU callables
(``PhaseSpec.local_ok``) runs them here instead when Ray is not running yet and the todo list
is small; everything else is unchanged: the same stage classes, the same parts (published by
the driver through the same fence), the same errors table and run log, so a run killed at any
instant is rerun exactly as a Ray run is. A running Ray (the user's ``ray.init()`` or
``RAY_ADDRESS``), GPU stages and large runs always take the Ray Data pipeline.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import subprocess
import sys
import tempfile
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO, Any

import pyarrow as pa

from exoray.engine.budget import interrupt_status
from exoray.engine.local_worker import read_message, write_message
from exoray.engine.part_plan import first_part_rows
from exoray.engine.progress import ProgressMonitor
from exoray.engine.runlog import RunRecord, now_utc
from exoray.engine.sink import publish_rows
from exoray.engine.spec import PhaseSpec, StageContext, Target
from exoray.engine.worker_errors import WorkerFailure
from exoray.image.manifest import manifest_root
from exoray.storage import layout
from exoray.storage.lease import Fence
from exoray.storage.store import Store


@dataclass
class _Work:
    rows: pa.Table
    attempts: int = 0  # times a worker process died while working on these rows


def worker_died_rows(rows: pa.Table) -> pa.Table:
    """Stage-shaped error rows for images whose worker process died on them (transient:
    the next run retries them by itself)."""
    messages = [f"{rel}: the worker process died while processing this file (killed for memory, "
                "or a crash in a decoder); the next run retries it"
                for rel in rows["relpath"].to_pylist()]
    return rows.select(["image_id", "relpath", "fingerprint", "run_id"]).append_column(
        "error", pa.array(["worker"] * rows.num_rows, pa.string())).append_column(
        "message", pa.array(messages, pa.string()))


def _worker_env() -> dict[str, str]:
    env = dict(os.environ)
    # One process per core already: native thread pools on top would oversubscribe (Ray sets
    # the same for its workers).
    for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env.setdefault(name, "1")
    return env


class _Worker:
    """One worker process; its work in flight is known exactly, in the order it answers."""

    def __init__(self, stage_specs: list[tuple[type, dict[str, Any]]]) -> None:
        # -P: the driver's working directory never goes on the worker's import path (a BASE
        # folder named like a package must not shadow it).
        # Its stderr (warnings, a crash's last words) is kept in a file, shown with -v.
        self.log = None if os.environ.get("EXORAY_VERBOSE") else \
            tempfile.TemporaryFile()  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            [sys.executable, "-P", "-m", "exoray.engine.local_worker"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log, env=_worker_env())
        self.stdin: IO[bytes] = self.process.stdin  # type: ignore[assignment]
        self.stdout: IO[bytes] = self.process.stdout  # type: ignore[assignment]
        self.in_flight: deque[_Work] = deque()
        self.ready = False  # it said "ready" once its stages' imports succeeded
        # The stage specs first: the worker imports its stages while the driver prepares.
        write_message(self.stdin, stage_specs)

    def submit(self, work: _Work) -> None:
        self.in_flight.append(work)
        # If it died, its end of file (read next) hands this work back to the queue.
        with contextlib.suppress(OSError):
            write_message(self.stdin, work.rows)

    def last_words(self) -> str:
        """The last line the process wrote to stderr (why it could not start)."""
        if self.log is None:
            return "see its output above"
        self.log.seek(0)
        lines = [line.strip() for line in self.log.read().decode(errors="replace").splitlines()
                 if line.strip()]
        return lines[-1][:300] if lines else f"exit code {self.process.returncode}"

    def receive(self) -> tuple[str, Any] | None:
        """The next reply, or None if the process died."""
        return read_message(self.stdout)

    def stop(self) -> None:
        with contextlib.suppress(OSError):
            self.process.kill()
        with contextlib.suppress(OSError, subprocess.TimeoutExpired):
            self.process.wait(timeout=5)
        for stream in (self.stdin, self.stdout, self.log):
            with contextlib.suppress(OSError, AttributeError):
                stream.close()


class _Pool:
    """Worker processes, each with up to two batches in flight (the next one is already in its
    pipe when it finishes). A worker that dies is replaced; its batch is retried once, then
    split into single images, so one file that kills its process costs only its own row."""

    def __init__(self, workers: int, stage_specs: list[tuple[type, dict[str, Any]]]) -> None:
        self.stage_specs = stage_specs
        self.workers = [_Worker(stage_specs) for _ in range(workers)]
        self.queue: deque[_Work] = deque()
        self.selector = selectors.DefaultSelector()
        for worker in self.workers:
            self._watch(worker)

    def _watch(self, worker: _Worker) -> None:
        self.selector.register(worker.stdout, selectors.EVENT_READ, worker)

    def busy(self) -> bool:
        return bool(self.queue) or any(w.in_flight for w in self.workers)

    def _feed(self) -> None:
        for worker in self.workers:
            while self.queue and len(worker.in_flight) < 2:
                worker.submit(self.queue.popleft())

    def results(self) -> Iterator[pa.Table]:
        """Stage output tables as workers finish them (worker-died rows included)."""
        while self.busy():
            self._feed()
            for key, _ in self.selector.select():
                worker: _Worker = key.data
                reply = worker.receive()
                if reply is None:
                    if not worker.ready:
                        worker.process.wait()
                        why = worker.last_words()
                        raise WorkerFailure(
                            f"a local worker process could not start ({why}); "
                            "rerun with -v to see its output, or with --executor ray")
                    yield from self._replace(worker)
                    continue
                status, value = reply
                if status == "ready":
                    worker.ready = True
                    continue
                worker.in_flight.popleft()
                if status == "error":
                    raise value
                yield value

    def _replace(self, dead: _Worker) -> Iterator[pa.Table]:
        self.selector.unregister(dead.stdout)
        dead.stop()
        if dead.in_flight:
            current, *waiting = dead.in_flight
            self.queue.extendleft(reversed(waiting))  # never started: no blame
            if current.attempts == 0:
                self.queue.appendleft(_Work(current.rows, 1))
            elif current.rows.num_rows > 1:
                self.queue.extendleft(_Work(current.rows.slice(i, 1), 2)
                                      for i in range(current.rows.num_rows))
            else:
                yield worker_died_rows(current.rows)
        fresh = _Worker(self.stage_specs)
        self.workers[self.workers.index(dead)] = fresh
        self._watch(fresh)

    def close(self) -> None:
        # Workers hold nothing that must be saved: a Ctrl-C or the --max-minutes stop does not
        # wait for batches whose rows the next run redoes anyway.
        for worker in self.workers:
            worker.stop()
        self.selector.close()


def execute_local(spec: PhaseSpec, store: Store, run_id: str, todo: pa.Table,
                  targets: list[Target], opts: dict[str, Any], *, part_rows: int,
                  show_progress: bool, record_options: dict[str, Any],
                  hard_stop: Any = None) -> Any:
    from exoray.engine.ray_runtime import usable_cpus
    from exoray.engine.runner import RunResult

    cpus = usable_cpus()
    ctx = StageContext(store=store, run_id=run_id, image_root=manifest_root(store) or "",
                       targets=targets, options=opts, cpus=float(cpus), gpus=0.0)
    stages = spec.stages(ctx) if spec.stages is not None else []
    if not stages or any(s.num_gpus or s.batch_format != "pyarrow" for s in stages):
        raise ValueError(f"{spec.name}: its stages need Ray (GPU or non-Arrow batches); "
                         "use --executor ray")
    stage_specs = [(s.fn, s.constructor_kwargs) for s in stages]
    workers = max(1, min(cpus, max(s.pool_size for s in stages)))
    batch_size = stages[0].batch_size
    pool = _Pool(workers, stage_specs)  # workers import while the driver records the start
    record = RunRecord(run_id=run_id, phase=spec.name, started_at=now_utc(), todo=todo.num_rows,
                       targets=[t.folder for t in targets],
                       options={**record_options, "executor": "local"})
    record.record_start(store)
    folders = [t.folder for t in targets]
    fence = Fence(store, spec.name, run_id, check_orphan=False)
    started = time.perf_counter()
    status = "failed"
    processed = 0

    def publish(tables: list[pa.Table]) -> None:
        publish_rows(store, pa.concat_tables(tables, promote_options="permissive"),
                     phase=spec.name, run_id=run_id, targets=targets, fence=fence)

    try:
        with ProgressMonitor(store, folders, layout.errors_folder(spec.name), run_id,
                             todo.num_rows, spec.name, enabled=show_progress,
                             processed=lambda: processed), \
                (hard_stop or contextlib.nullcontext()):
            pool.queue.extend(_Work(todo.slice(i, batch_size))
                              for i in range(0, todo.num_rows, batch_size))
            buffer: list[pa.Table] = []
            buffered, threshold = 0, first_part_rows(part_rows)
            for out in pool.results():
                buffer.append(out)
                buffered += out.num_rows
                processed += out.num_rows
                if buffered >= threshold:
                    publish(buffer)
                    buffer, buffered, threshold = [], 0, part_rows
            if buffer:
                publish(buffer)
        status = "completed"
    except KeyboardInterrupt:
        status = interrupt_status(hard_stop)
        if status == "interrupted":
            raise
    finally:
        pool.close()
        record.record_outcome(store, status)
    return RunResult(run_id, spec.name, todo.num_rows, record.processed, record.errors,
                     time.perf_counter() - started, stopped="time" if status == "stopped" else "")
