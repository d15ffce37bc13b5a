"""Progress of a running phase: images processed by the stages (a counter actor) and images
committed to BASE (counted from part names, no file opens, cheap on Drive)."""

from __future__ import annotations

import logging
import sys
import threading
import time
from typing import Any

from exoray.storage.parts import list_parts
from exoray.storage.store import Store

log = logging.getLogger(__name__)


def rows_of_run(store: Store, folder: str, run_id: str) -> int:
    return sum(p.rows for p in list_parts(store, folder) if p.run_id == run_id)


class ProcessedCounter:
    """A tiny Ray actor the last stage reports to: rows through every stage, not yet on disk."""

    def __init__(self) -> None:
        self.rows = 0

    def add(self, rows: int) -> None:
        self.rows += rows

    def value(self) -> int:
        return self.rows


def _batch_rows(batch: Any) -> int:
    if hasattr(batch, "num_rows"):
        return int(batch.num_rows)
    if isinstance(batch, dict) and batch:
        return len(next(iter(batch.values())))
    return len(batch)


class CountedStage:
    """Wraps the last stage class: counts the rows it hands to the writer (never fails a batch
    because the counter is gone)."""

    def __init__(self, inner: type, inner_kwargs: dict[str, Any], counter: str) -> None:
        import ray

        self.inner = inner(**inner_kwargs)
        try:
            self.counter = ray.get_actor(counter)
        except ValueError:
            self.counter = None

    def __call__(self, batch: Any) -> Any:
        out = self.inner(batch)
        if self.counter is not None:
            self.counter.add.remote(_batch_rows(out))
        return out


class ProgressMonitor:
    """Shows images processed and committed (with ETA) in one tqdm bar."""

    def __init__(self, store: Store, folders: list[str], errors_folder: str, run_id: str,
                 total: int, label: str, interval: float = 2.0, enabled: bool = True,
                 processed: Any = None) -> None:
        self.processed = processed  # () -> int, or None
        self.store, self.folders, self.errors_folder = store, folders, errors_folder
        self.run_id, self.total, self.label = run_id, total, label
        self.interval, self.enabled = interval, enabled
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._started = time.perf_counter()
        self._bar: Any = None

    def committed(self) -> int:
        """Images finished: the most-advanced output (each image lands once per output) + errors."""
        done = max((rows_of_run(self.store, f, self.run_id) for f in self.folders), default=0)
        return done + rows_of_run(self.store, self.errors_folder, self.run_id)

    def __enter__(self) -> ProgressMonitor:
        if self.enabled and self.total:
            from tqdm.auto import tqdm

            self._bar = tqdm(total=self.total, desc=f"{self.label} committed", unit="img",
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
            if self.processed is not None:
                try:
                    self._bar.set_postfix_str(f"processed {self.processed()}", refresh=False)
                except Exception as exc:  # noqa: BLE001 - the counter is only a display aid
                    log.debug("processed counter unavailable: %s", exc)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._update()
        if self._bar is not None:
            self._bar.close()
