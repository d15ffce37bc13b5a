"""Session-aware runs: a phase's rate across every earlier run, and a time budget per run.

A Colab kernel dies every few hours. ``--max-minutes M`` makes a run stop on its own before
then: it takes only as many images as the phase's measured rate fits in ``M`` minutes (whole
parts), and if it still runs late it is stopped at ``M`` minutes. Either way every committed part
stays; images in flight at a hard stop are simply redone by the next run.

The rate counts every run that wrote the folder, killed ones too: a run without an end record
(the kernel died) is timed from its start to its newest committed part, so the ETA survives
kernel deaths instead of waiting for one run to finish.
"""

from __future__ import annotations

import _thread
import datetime as dt
import math
import signal
import threading
import time
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc

from exoray.storage.parts import parse_part_name
from exoray.storage.store import FileEntry, Store

DEFAULT_SESSION_MINUTES = 180.0  # what a free Colab session usually lasts when it is used
PLAN_MARGIN = 0.85  # of the budget planned for images; the rest absorbs start-up and slow parts


@dataclass(frozen=True)
class PhaseRate:
    """Images per second of a phase over its runs (start-ups included, as a user pays them)."""

    images: int
    seconds: float
    runs: int

    @property
    def images_per_s(self) -> float | None:
        return self.images / self.seconds if self.seconds > 0 and self.images else None


def _run_rows(entries: list[FileEntry]) -> dict[str, tuple[int, int]]:
    """run id -> (rows committed, newest part's mtime in ns) from one folder's listing."""
    out: dict[str, tuple[int, int]] = {}
    for entry in entries:
        parsed = parse_part_name(entry.relpath)
        if parsed is None:
            continue
        run_id, _digest, rows = parsed
        seen, newest = out.get(run_id, (0, 0))
        out[run_id] = (seen + rows, max(newest, entry.mtime_ns))
    return out


def phase_rate(store: Store, runs: pa.Table, phase: str, folder: str, errors_folder: str
               ) -> PhaseRate:
    """The rate of every run of ``phase`` that wrote ``folder``: finished runs by their
    record, killed or running ones by their committed parts and the newest part's time."""
    if runs.num_rows == 0:
        return PhaseRate(0, 0.0, 0)
    mine = runs.filter(pc.equal(runs["phase"], phase)).to_pylist()
    mine = [r for r in mine if folder in (r["targets"] or [])]
    if not mine:
        return PhaseRate(0, 0.0, 0)
    committed = _run_rows(store.list_files(folder, suffix=".parquet"))
    failed = _run_rows(store.list_files(errors_folder, suffix=".parquet"))
    images, seconds, counted = 0, 0.0, 0
    for run in mine:
        if run["seconds"] and run["status"] in ("completed", "stopped", "failed"):
            n = (run["processed"] or 0) + (run["errors"] or 0)
            took = float(run["seconds"])
        else:  # killed (or still running): committed rows over the time until the last one
            rows, newest = committed.get(run["run_id"], (0, 0))
            err_rows, err_newest = failed.get(run["run_id"], (0, 0))
            n, newest = rows + err_rows, max(newest, err_newest)
            started = run["started_at"]
            if not n or not newest or started is None:
                continue
            last = dt.datetime.fromtimestamp(newest / 1e9, dt.timezone.utc)
            took = (last - started).total_seconds()
        if n and took > 0:
            images, seconds, counted = images + n, seconds + took, counted + 1
    return PhaseRate(images, seconds, counted)


def sessions_needed(remaining: int, rate: float | None, session_minutes: float) -> int | None:
    """Sessions of ``session_minutes`` the remaining images take at ``rate`` (None: unknown)."""
    if not rate or session_minutes <= 0:
        return None
    return max(1, math.ceil(remaining / rate / (session_minutes * 60))) if remaining else 0


def check_max_minutes(value: object) -> float | None:
    """``--max-minutes`` as a positive number of minutes (None: no limit)."""
    if value is None:
        return None
    try:
        minutes = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        minutes = float("nan")
    if isinstance(value, bool) or not math.isfinite(minutes) or minutes <= 0:
        raise ValueError(f"max_minutes must be a positive number of minutes, got {value!r}; "
                         "pass e.g. --max-minutes 150 to stop before a 3-hour session ends")
    return minutes


def planned_images(minutes: float, rate: float | None, part_rows: int) -> int | None:
    """How many images fit in ``minutes`` at ``rate``, in whole parts (None: no rate known)."""
    if not rate:
        return None
    fits = int(rate * minutes * 60 * PLAN_MARGIN)
    return max(part_rows, fits // part_rows * part_rows)


def interrupt_status(hard_stop: HardStop | None) -> str:
    """How a run that got KeyboardInterrupt ended: "stopped" when its own --max-minutes timer
    fired (committed parts stay, in-flight rows are redone; the run returns normally), else
    "interrupted" (a real Ctrl-C: the caller re-raises)."""
    return "stopped" if hard_stop is not None and hard_stop.fired else "interrupted"


class HardStop:
    """Interrupts the main thread's pipeline when the budget is spent (the run then records
    ``stopped``, keeps every committed part, and returns normally)."""

    def __init__(self, minutes: float | None) -> None:
        self.minutes = minutes
        self.fired = False
        self._timer: threading.Timer | None = None
        self._started = time.monotonic()

    def __enter__(self) -> HardStop:
        # Only the main thread can be interrupted; a run started from another thread keeps the
        # planned size as its only limit.
        if self.minutes is not None and threading.current_thread() is threading.main_thread():
            left = self.minutes * 60 - (time.monotonic() - self._started)
            self._timer = threading.Timer(max(0.0, left), self._fire)
            self._timer.daemon = True
            self._timer.start()
        return self

    def _fire(self) -> None:
        self.fired = True
        # A real SIGINT to the main thread wakes it from a blocking wait (like Ctrl-C);
        # interrupt_main() alone would only act once that wait returns.
        if callable(signal.getsignal(signal.SIGINT)) and hasattr(signal, "pthread_kill"):
            signal.pthread_kill(threading.main_thread().ident or 0, signal.SIGINT)
        else:
            _thread.interrupt_main()

    def __exit__(self, *exc: object) -> None:
        if self._timer is not None:
            self._timer.cancel()
