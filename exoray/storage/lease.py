"""One publishing run per phase: a lease that fences out writers of killed runs.

When a run is killed, Ray worker processes that were already writing can outlive it for a moment
and publish a part after the rerun has computed its todo list, which would duplicate images. Each
run therefore takes the phase's lease (``logs/leases/<phase>.json``) before it reads what is done,
and every part is published only after checking, right before the publish, that the lease is still
its own and that the worker has not been orphaned (its parent, the raylet, died with the run).
"""

from __future__ import annotations

import json
import os
import socket
import time

from exoray.storage.store import Store

LEASES = "logs/leases"


class LeaseLost(RuntimeError):
    """This run may no longer publish: a newer run of the phase took over, or it was killed."""


def take_lease(store: Store, phase: str, run_id: str) -> None:
    record = {"run_id": run_id, "host": socket.gethostname(), "pid": os.getpid(),
              "time": time.time()}
    store.write_bytes_atomic(json.dumps(record).encode(), LEASES, f"{phase}.json")


def lease_holder(store: Store, phase: str) -> str | None:
    if not store.exists(LEASES, f"{phase}.json"):
        return None
    return json.loads(store.read_bytes(LEASES, f"{phase}.json"))["run_id"]


class Fence:
    """Called right before each publish inside a write task; raises :class:`LeaseLost`."""

    def __init__(self, store: Store, phase: str, run_id: str) -> None:
        self.store, self.phase, self.run_id = store, phase, run_id
        self.parent = os.getppid()

    def __call__(self) -> None:
        if os.getppid() != self.parent:
            raise LeaseLost(f"run {self.run_id} was killed; not publishing its last part "
                            "(the rerun does these images again)")
        holder = lease_holder(self.store, self.phase)
        if holder != self.run_id:
            raise LeaseLost(f"run {holder} of phase {self.phase!r} took over from run "
                            f"{self.run_id}; run one {self.phase} at a time per BASE")
