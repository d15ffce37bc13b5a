"""Starting Ray the way a 2-vCPU Colab runtime needs, or joining the cluster the user chose."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ClusterShape:
    cpus: float
    gpus: float


def ensure_ray() -> ClusterShape:
    """Use the running Ray (user's ``ray.init()`` or ``RAY_ADDRESS``), else start a local one.

    A local start has no dashboard (nothing can reach it in Colab) and declares the machine's
    cores; actor shares are sized by :func:`actor_pool_plan` so the write tasks always fit.
    """
    verbose = bool(os.environ.get("EXORAY_VERBOSE"))
    import ray

    if not verbose:
        quiet_ray_loggers()
    if not ray.is_initialized():
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")
        address = os.environ.get("RAY_ADDRESS")
        if address:
            ray.init(address=address, ignore_reinit_error=True, log_to_driver=verbose)
        else:
            # address="local": never join a stale cluster a dead `ray start --head` left behind.
            with neutral_cwd():
                ray.init(address="local", num_cpus=usable_cpus(),
                         include_dashboard=False, ignore_reinit_error=True,
                         configure_logging=False, log_to_driver=verbose)
            _wait_for_resources(ray)
    res = ray.cluster_resources()
    return ClusterShape(cpus=float(res.get("CPU", 1.0)), gpus=float(res.get("GPU", 0.0)))


def usable_cpus() -> int:
    """Cores this process may run on: a container or ``taskset`` limit counts, not the host's."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not Linux
        return os.cpu_count() or 2


@contextlib.contextmanager
def neutral_cwd() -> Iterator[None]:
    """Start Ray from a folder of our own: Ray puts the driver's working directory on every
    worker's import path, and a folder there named like a package (a BASE called ``exoray``)
    would shadow the real one in the workers."""
    from exoray.storage.staging import staging_root

    before = os.getcwd()
    os.chdir(staging_root())
    try:
        yield
    finally:
        os.chdir(before)


def quiet_ray_loggers() -> None:
    """Only errors from Ray's Python loggers (driver side)."""
    for name in ("ray", "ray.data", "ray.data._internal", "ray._private"):
        logging.getLogger(name).setLevel(logging.ERROR)


def _wait_for_resources(ray, timeout: float = 10.0) -> None:
    """A fresh local Ray reports its CPUs a moment after init; Ray Data warns (wrongly) that the
    cluster has none if a pipeline starts before then."""
    import time

    deadline = time.monotonic() + timeout
    while not ray.available_resources().get("CPU") and time.monotonic() < deadline:
        time.sleep(0.1)


@dataclass(frozen=True)
class PoolPlan:
    size: int
    num_cpus: float


def actor_pool_plan(shape: ClusterShape, *, max_actors: int | None = None,
                    cpu_share: float = 0.5) -> PoolPlan:
    """One CPU actor per core, each reserving ``cpu_share`` so Ray's read/write tasks still fit.

    Reserving a whole CPU per actor on a 2-core machine starves the write tasks and the pipeline
    hangs; the actors still use their core fully (threads release the GIL in decode/OpenCV).
    """
    size = max(1, int(shape.cpus))
    if max_actors is not None:
        size = max(1, min(size, max_actors))
    return PoolPlan(size=size, num_cpus=cpu_share)
