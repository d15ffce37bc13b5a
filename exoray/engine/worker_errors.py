"""Errors raised inside Ray workers, turned back into the one-line errors users get elsewhere.

Ray wraps an exception from an actor or a write task in several layers (``RayTaskError``, Ray
Data's ``UserCodeException``) whose string is hundreds of lines of remote traceback. The root
cause is what the user needs: its message names the file or value and the fix.
"""

from __future__ import annotations

import re

from exoray.storage.lease import LeaseBusy, LeaseLost

# Root causes whose message is already written for users (re-raised as they are).
USER_ERRORS: tuple[type[BaseException], ...] = (
    ValueError, FileNotFoundError, ImportError, KeyError, PermissionError, LeaseLost, LeaseBusy,
    MemoryError,
)


def _is_ray_wrapper(exc: BaseException) -> bool:
    return type(exc).__module__.split(".", 1)[0] == "ray"


def root_cause(exc: BaseException) -> BaseException:
    """The first exception under Ray's wrappers (our own ``raise ... from`` chains are kept)."""
    seen: set[int] = set()
    current = exc
    while _is_ray_wrapper(current) and id(current) not in seen:
        seen.add(id(current))
        inner = getattr(current, "cause", None)
        if not isinstance(inner, BaseException):
            inner = current.__cause__
        if inner is None:
            break
        current = inner
    return current


class WorkerFailure(RuntimeError):
    """An unexpected failure inside a Ray worker, already summarised in one line."""


def user_facing(exc: BaseException) -> BaseException:
    """The root cause if users can act on its message (or ``exc`` itself when Ray did not wrap
    it), else a one-line :class:`WorkerFailure`."""
    cause = root_cause(exc)
    if isinstance(cause, (*USER_ERRORS, WorkerFailure)) or not _is_ray_wrapper(exc):
        return cause
    text = str(cause).strip()
    remote = _remote_error_line(str(exc)) if _is_ray_wrapper(cause) else None
    if remote:  # Ray Data's "UDF failed to process a data block" hides the real error
        summary = remote
    elif text:
        summary = f"{type(cause).__name__}: {text.splitlines()[0][:300]}"
    else:  # a wrapper without a message: the last line of the remote traceback says what failed
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        summary = lines[-1][:300] if lines else type(cause).__name__
    return WorkerFailure(f"a Ray worker failed: {summary}; rerun with -v for the full "
                         "traceback, and report it if it persists")


_ERROR_LINE = re.compile(r"^([A-Za-z_][\w.]*(?:Error|Exception|Exit)): (.+)$")


def _remote_error_line(text: str) -> str | None:
    """The last ``SomeError: message`` line of a remote traceback that is not Ray's own."""
    found = None
    for line in text.splitlines():
        match = _ERROR_LINE.match(line.strip())
        if match and not match.group(1).startswith("ray.") and \
                match.group(1) not in ("UserCodeException", "RayTaskError"):
            found = f"{match.group(1)}: {match.group(2)[:300]}"
    return found
