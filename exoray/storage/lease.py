"""One publishing run per phase: a lease with a heartbeat that fences out other writers.

A run takes the phase's lease (``logs/leases/<phase>.json``) before it reads what is done and keeps
it fresh with a heartbeat. A second run refuses to start while a live holder exists (so no work is
thrown away) and takes over from a dead one: one whose heartbeat is older than ``STALE_AFTER`` or,
on the same host, whose process is gone. Every part is published only after checking, right before
the publish, that the lease is still the run's own and that the writer has not been orphaned.

What this cannot fence (the check and the publish are two steps; a lease write is not a
compare-and-swap; on a cluster a raylet can outlive its driver): a late writer may still publish.
That is safe because part names are content-derived and readers deduplicate by the phase key.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from typing import Any

from exoray.storage import layout
from exoray.storage.store import Store

log = logging.getLogger(__name__)
HEARTBEAT_SECONDS = 15.0
STALE_AFTER = 90.0  # a holder silent this long is dead: its lease can be taken over
CONFIRM_DELAY = 0.3  # re-read after writing, so two simultaneous starts do not both proceed


class LeaseLost(RuntimeError):
    """This run may no longer publish: a newer run of the phase took over, or it was killed."""


class LeaseBusy(RuntimeError):
    """Another live run holds the phase's lease; starting now would waste its work."""


def _path(phase: str) -> tuple[str, str]:
    return layout.LEASES, f"{phase}.json"


def read_lease(store: Store, phase: str) -> dict[str, Any] | None:
    if not store.exists(*_path(phase)):
        return None
    try:
        return json.loads(store.read_bytes(*_path(phase)))
    except (ValueError, FileNotFoundError):
        return None


def lease_holder(store: Store, phase: str) -> str | None:
    record = read_lease(store, phase)
    return None if record is None else record.get("run_id")


def _write(store: Store, phase: str, run_id: str, *, released: bool = False) -> None:
    record = {"run_id": run_id, "host": socket.gethostname(), "pid": os.getpid(),
              "time": time.time(), "released": released}
    store.write_bytes_atomic(json.dumps(record).encode(), *_path(phase))


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def live_holder(store: Store, phase: str) -> dict[str, Any] | None:
    """The lease record if a live run holds it, else None."""
    record = read_lease(store, phase)
    if record is None or record.get("released"):
        return None
    if time.time() - float(record.get("time", 0)) > STALE_AFTER:
        return None
    if record.get("host") == socket.gethostname() and not _pid_alive(int(record.get("pid", 0))):
        return None
    return record


def take_lease(store: Store, phase: str, run_id: str, *, force: bool = False) -> None:
    """Become the phase's only publishing run; :class:`LeaseBusy` if a live run holds it."""
    holder = None if force else live_holder(store, phase)
    if holder is not None:
        raise _busy(phase, holder)
    _write(store, phase, run_id)
    if not force:
        time.sleep(CONFIRM_DELAY)
        record = read_lease(store, phase)
        if record is not None and record.get("run_id") != run_id:
            raise _busy(phase, record)


def _busy(phase: str, holder: dict[str, Any]) -> LeaseBusy:
    age = time.time() - float(holder.get("time", 0))
    return LeaseBusy(
        f"{phase} is already running in this BASE (run {holder.get('run_id')} on "
        f"{holder.get('host')}, pid {holder.get('pid')}, heartbeat {age:.0f}s ago); wait for it "
        f"to finish, or stop it: a dead run's lease is taken over after {STALE_AFTER:.0f}s")


def release_lease(store: Store, phase: str, run_id: str) -> None:
    """Mark the lease free if it is still ours (a finished run must not block the next one)."""
    if lease_holder(store, phase) == run_id:
        _write(store, phase, run_id, released=True)


class LeaseKeeper:
    """Context manager: heartbeat the lease while a run works, release it at the end."""

    def __init__(self, store: Store, phase: str, run_id: str,
                 interval: float = HEARTBEAT_SECONDS) -> None:
        self.store, self.phase, self.run_id, self.interval = store, phase, run_id, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, daemon=True, name="exoray-lease")

    def _beat(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                if lease_holder(self.store, self.phase) != self.run_id:
                    return  # taken over: the fence withholds our parts from now on
                _write(self.store, self.phase, self.run_id)
            except OSError as exc:  # a Drive hiccup; the next beat tries again
                log.debug("lease heartbeat failed: %s", exc)

    def __enter__(self) -> LeaseKeeper:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        release_lease(self.store, self.phase, self.run_id)


class Fence:
    """Called right before each publish inside a write task; raises :class:`LeaseLost`."""

    def __init__(self, store: Store, phase: str, run_id: str, *,
                 check_orphan: bool = True) -> None:
        """``check_orphan``: a Ray worker whose raylet died withholds its part; the driver
        publishing itself (columnar phases) has no such parent to lose."""
        self.store, self.phase, self.run_id = store, phase, run_id
        self.parent = os.getppid() if check_orphan else None

    def __call__(self) -> None:
        if self.parent is not None and os.getppid() != self.parent:
            raise LeaseLost(f"run {self.run_id} was killed; not publishing its last part "
                            "(the rerun does these images again)")
        holder = lease_holder(self.store, self.phase)
        if holder != self.run_id:
            raise LeaseLost(f"run {holder} of phase {self.phase!r} took over from run "
                            f"{self.run_id}; run one {self.phase} at a time per BASE")
