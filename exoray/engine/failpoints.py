"""Named failure points, so tests can kill a real process at an exact step of the protocol.

``EXORAY_FAILPOINTS="between_publishes=exit:/tmp/marker"`` makes the first process that reaches
``hit("between_publishes")`` create the marker file and die at once (``os._exit``: a worker crash
Ray retries); ``killpg:`` first kills the process group ``EXORAY_FAILPOINT_PGID`` (the driver's
session, set by the test), so the whole run dies mid-publish. The marker
makes each failpoint fire once per test; ``always`` (no marker) dies every time, like a file that
crashes its decoder. Unset in normal use: then ``hit`` is a dictionary lookup.
"""

from __future__ import annotations

import os
import signal


def _armed() -> dict[str, str]:
    spec = os.environ.get("EXORAY_FAILPOINTS", "")
    out = {}
    for item in filter(None, spec.split(",")):
        name, _, action = item.partition("=")
        out[name.strip()] = action.strip()
    return out


def hit(name: str) -> None:
    """Die here if the failpoint ``name`` is armed and has not fired yet."""
    action = _armed().get(name)
    if not action:
        return
    how, _, marker = action.partition(":")
    if how == "always":
        os._exit(1)
    try:
        fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return  # fired already: the retry (or the rerun) goes through
    os.close(fd)
    if how == "killpg":
        os.killpg(int(os.environ.get("EXORAY_FAILPOINT_PGID", os.getpgid(0))), signal.SIGKILL)
    os._exit(1)
