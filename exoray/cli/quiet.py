"""Keep Ray's C++ log lines off a user's terminal unless ``-v``.

Ray's core worker in the driver writes notices (constructor arguments in the object store,
log-level changes) straight to file descriptor 2, past Python's logging. The CLI routes fd 2
through a pipe and drops lines in Ray's C++ log format; everything else passes unchanged.
"""

from __future__ import annotations

import os
import re
import threading

RAY_CPP_LINE = re.compile(rb"^\[\d{4}-\d\d-\d\d [\d:,.]+ [IWEF] \d+ \d+\] \S+\.cc:\d+: ")


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
        kept = [line for line in lines if not RAY_CPP_LINE.match(line)]
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
