"""Keep Ray's C++ log lines off a user's terminal unless ``-v``.

Ray's core worker in the driver writes notices (constructor arguments in the object store,
log-level changes) straight to file descriptor 2, past Python's logging, and Ray Data installs
its own log handlers when a dataset executes. The CLI routes fd 2 through a pipe and drops lines
in Ray's C++ log format and Ray's Python debug/info/warning lines; everything else passes.
"""

from __future__ import annotations

import os
import re
import threading

RAY_CPP_LINE = re.compile(rb"\[\d{4}-\d\d-\d\d [\d:,.]+ [IWEF] \d+ \d+\] \S+\.cc:\d+: ")
# Ray's Python loggers (Ray Data re-configures its own logging when a dataset executes).
RAY_PY_LINE = re.compile(rb"^\d{4}-\d\d-\d\d [\d:,.]+\t(DEBUG|INFO|WARNING) \S+\.py:\d+ -- ")


def _cut(segment: bytes) -> bytes:
    """``segment`` up to where a Ray C++ log line starts in it (all of it if none does)."""
    match = RAY_CPP_LINE.search(segment)
    return segment if match is None else segment[:match.start()]


class RayStderrFilter:
    """Context manager: filter fd 2 for the duration of a command."""

    def __init__(self) -> None:
        self._saved: int | None = None
        self._thread: threading.Thread | None = None

    def __enter__(self) -> RayStderrFilter:
        read_end, write_end = os.pipe()
        self._saved = os.dup(2)
        os.dup2(write_end, 2)
        os.close(write_end)
        self._thread = threading.Thread(target=self._pump, args=(read_end,), daemon=True,
                                        name="exoray-stderr")
        self._thread.start()
        return self

    def _pump(self, read_end: int) -> None:
        with os.fdopen(read_end, "rb", buffering=0) as pipe:
            pending = b""
            while chunk := pipe.read(65536):
                pending += chunk
                *lines, pending = pending.split(b"\n")
                self._emit(lines)
            if pending:
                self._emit([pending])

    def _emit(self, lines: list[bytes]) -> None:
        # A progress bar redraws with \r and no newline: Ray's line may follow it on one line.
        cleaned = [b"\r".join(_cut(seg) for seg in line.split(b"\r")) for line in lines]
        kept = [line for line, orig in zip(cleaned, lines, strict=True)
                if (line or not orig) and not RAY_PY_LINE.match(line)]
        if kept and self._saved is not None:
            os.write(self._saved, b"\n".join(kept) + b"\n")

    def __exit__(self, *exc: object) -> None:
        import sys

        sys.stderr.flush()
        if self._saved is None:
            return
        os.dup2(self._saved, 2)  # closes the pipe's last write end: the pump drains and stops
        if self._thread is not None:
            self._thread.join(timeout=5)
        os.close(self._saved)
        self._saved = None
