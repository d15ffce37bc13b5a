"""Which executor runs a phase: the Ray Data pipeline, or the local process pool.

Why its own module: the runner and the CLI need the choice (before any work), and only the
local executor needs the process pool itself.
"""

from __future__ import annotations

import os
import sys

from exoray.engine.spec import PhaseSpec

EXECUTORS = ("auto", "ray", "local")
# Above this many images Ray's start-up is a small share of the run (and Ray's scheduling,
# memory limits and cluster reach are worth having), so "auto" takes the Ray pipeline.
LOCAL_MAX_IMAGES = 20_000


def check_executor(spec: PhaseSpec, executor: str) -> None:
    """A wrong choice fails before any work, with the valid ones."""
    if executor not in EXECUTORS:
        raise ValueError(f"executor must be one of {', '.join(EXECUTORS)}, got {executor!r}")
    if executor == "local" and not spec.local_ok:
        raise ValueError(f"{spec.name}: --executor local is only for CPU phases without models "
                         "(features); this phase runs on Ray")


def choose_executor(spec: PhaseSpec, executor: str, todo_rows: int) -> str:
    """"ray" or "local" for this run; ``executor`` is the user's choice ("auto" decides)."""
    check_executor(spec, executor)
    if executor != "auto":
        return executor
    if not spec.local_ok or todo_rows > LOCAL_MAX_IMAGES or os.environ.get("RAY_ADDRESS"):
        return "ray"
    ray = sys.modules.get("ray")
    if ray is not None and getattr(ray, "is_initialized", lambda: False)():
        return "ray"  # the user started Ray (or joined a cluster): use it
    return "local"
