"""Reading image bytes from the image root with I/O threads, errors turned into values.

Drive's FUSE mount and object stores have high per-file latency, so files of a batch are read
concurrently; the threads also overlap decoding (PIL and OpenCV release the GIL).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

from exoray.storage import Store

TRANSIENT_ERRORS = frozenset({"io"})  # retried automatically on the next run


@dataclass(frozen=True)
class ItemError:
    """What went wrong with one image; becomes a row in the errors table."""

    error: str
    message: str


def read_image_bytes(root: Store, relpath: str) -> bytes | ItemError:
    try:
        return root.read_bytes(relpath)
    except FileNotFoundError:
        return ItemError("missing", f"{relpath}: file no longer exists under {root.location}; "
                                    "rerun `exoray manifest` to mark it deleted")
    except IsADirectoryError:
        return ItemError("not_image", f"{relpath}: is a folder, not an image file")
    except PermissionError as exc:
        return ItemError("permission", f"{relpath}: cannot be read ({exc}); fix its permissions")
    except OSError as exc:
        return ItemError("io", f"{relpath}: read failed ({exc}); it will be retried next run")


T = TypeVar("T")


def process_file(root: Store, relpath: str, fn: Callable[[bytes, str], T]) -> T | ItemError:
    """Read ``relpath`` and apply ``fn(data, relpath)``; every failure becomes an ItemError."""
    from exoray.decode import DecodeError

    data = read_image_bytes(root, relpath)
    if isinstance(data, ItemError):
        return data
    try:
        return fn(data, relpath)
    except DecodeError as exc:
        return ItemError(exc.kind, str(exc))
    except Exception as exc:  # noqa: BLE001 - one bad image must never cost the batch
        return ItemError("internal", f"{relpath}: {type(exc).__name__}: {exc}; please report this "
                                     "file to the exoray issue tracker")


class ThreadedMapper:
    """Runs a per-item function over a batch with a thread pool sized for I/O latency."""

    def __init__(self, io_threads: int | None = None) -> None:
        n = io_threads or int(os.environ.get("EXORAY_IO_THREADS", "8"))
        self.pool = ThreadPoolExecutor(max_workers=max(1, n), thread_name_prefix="exoray-io")

    def map(self, fn: Any, items: list[Any]) -> list[Any]:
        return list(self.pool.map(fn, items))
