"""Errors raised inside Ray workers, turned back into the one-line errors users get elsewhere.

Ray wraps an exception from an actor or a write task in several layers (``RayTaskError``, Ray
Data's ``UserCodeException``) whose string is hundreds of lines of remote traceback. The root
cause is what the user needs: its message names the file or value and the fix.
"""

from __future__ import annotations

from exoray.storage.lease import LeaseBusy, LeaseLost

# Root causes whose message is already written for users (re-raised as they are).
USER_ERRORS: tuple[type[BaseException], ...] = (
    ValueError, FileNotFoundError, ImportError, KeyError, PermissionError, LeaseLost, LeaseBusy,
    MemoryError,
)


def root_cause(exc: BaseException) -> BaseException:
    """The innermost exception that is not one of Ray's wrappers."""
    seen: set[int] = set()
    current = exc
    while id(current) not in seen:
        seen.add(id(current))
        inner = getattr(current, "cause", None)
        if not isinstance(inner, BaseException):
            inner = current.__cause__
        if inner is None:
            break
        current = inner
    return current


def user_facing(exc: BaseException) -> BaseException:
    """The root cause if users can act on its message, else a one-line RuntimeError."""
    cause = root_cause(exc)
    if isinstance(cause, USER_ERRORS):
        return cause
    first_line = (str(cause).strip().splitlines() or [""])[0][:300]
    return RuntimeError(f"a Ray worker failed: {type(cause).__name__}: {first_line}; rerun with "
                        "-v for the full traceback, and report it if it persists")
