"""One worker process of the local pool (``python -P -m exoray.engine.local_worker``).

A plain subprocess rather than ``multiprocessing``: spawn would re-import the user's main script
in every worker (a script without an ``if __name__ == "__main__"`` guard would run itself again)
and fork is unsafe once Arrow's threads run in the driver. Messages on stdin/stdout are
length-prefixed pickles: the stage specs once, then one batch per message, answered in order.
"""

from __future__ import annotations

import os
import pickle
import signal
import struct
import sys
from typing import Any, BinaryIO

_HEADER = struct.Struct("<Q")


def write_message(stream: BinaryIO, message: Any) -> None:
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(_HEADER.pack(len(data)) + data)
    stream.flush()


def read_message(stream: BinaryIO) -> Any:
    """The next message, or None when the other side has gone (end of stream)."""
    header = stream.read(_HEADER.size)
    if len(header) < _HEADER.size:
        return None
    (size,) = _HEADER.unpack(header)
    data = stream.read(size)
    if len(data) < size:
        return None
    return pickle.loads(data)


def _portable(exc: BaseException) -> BaseException:
    """The exception itself if it survives pickling, else a RuntimeError with its text."""
    try:
        pickle.loads(pickle.dumps(exc))
        return exc
    except Exception:  # noqa: BLE001 - any unpicklable exception becomes its message
        return RuntimeError(f"{type(exc).__name__}: {exc}")


def serve(inp: BinaryIO, out: BinaryIO) -> None:
    from exoray.engine import failpoints

    stage_specs = read_message(inp)  # unpickling the stage classes imports their modules
    if stage_specs is None:
        return
    write_message(out, ("ready", os.getpid()))
    stages = None
    per_image_failpoints = "local_image:" in os.environ.get("EXORAY_FAILPOINTS", "")
    while (batch := read_message(inp)) is not None:
        if per_image_failpoints:  # tests: a file that kills its worker every time
            for relpath in batch["relpath"].to_pylist():
                failpoints.hit(f"local_image:{relpath}")
        try:
            if stages is None:
                stages = [fn(**kwargs) for fn, kwargs in stage_specs]
            result = batch
            for stage in stages:
                result = stage(result)
            failpoints.hit("local_batch_done")
            reply: tuple[str, Any] = ("ok", result)
        except Exception as exc:  # noqa: BLE001 - sent to the driver, which raises it
            reply = ("error", _portable(exc))
        write_message(out, reply)


def main() -> None:
    # The driver decides when to stop (Ctrl-C, --max-minutes) and terminates its workers.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    out = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())  # stray prints must not corrupt replies
    serve(sys.stdin.buffer, out)


if __name__ == "__main__":
    main()
