"""Reading image bytes from the image root with I/O threads, errors turned into values.

Drive's FUSE mount and object stores have high per-file latency, so files of a batch are read
concurrently; the threads also overlap decoding (PIL and OpenCV release the GIL).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar

import numpy as np

from exoray.storage.store import Store


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


def split_results(results: list[T | ItemError]
                  ) -> tuple[np.ndarray, np.ndarray, list[tuple[int, T]]]:
    """A batch's reader results as the ``error`` and ``message`` columns every stage emits,
    plus (row, value) of each success for the stage to place in its own columns."""
    from exoray.engine.schemas import NO_ERROR

    n = len(results)
    errors = np.full(n, NO_ERROR, dtype=object)
    messages = np.full(n, "", dtype=object)
    ok: list[tuple[int, T]] = []
    for i, res in enumerate(results):
        if isinstance(res, ItemError):
            errors[i], messages[i] = res.error, res.message
        else:
            ok.append((i, res))
    return errors, messages, ok


def apply_decoder(data: bytes | ItemError, relpath: str, fn: Callable[[bytes, str], T]
                  ) -> T | ItemError:
    """``fn(data, relpath)`` with every failure turned into an ItemError (never raised)."""
    from exoray.image.decode import DecodeError

    if isinstance(data, ItemError):
        return data
    try:
        return fn(data, relpath)
    except DecodeError as exc:
        return ItemError(exc.kind, str(exc))
    except MemoryError:  # the machine was short of memory: the next run tries again
        return ItemError("memory", f"{relpath}: ran out of memory while decoding; it will be "
                                   "retried next run (fewer actors or --max-pixels help)")
    except Exception as exc:  # noqa: BLE001 - one bad image must never cost the batch
        return ItemError("internal", f"{relpath}: {type(exc).__name__}: {exc}; please report this "
                                     "file to the exoray issue tracker")


class PrefetchingReader:
    """Reads a batch's files on I/O threads while the calling thread decodes them in order.

    Drive's FUSE mount and object stores have ~20 ms per-file latency: all reads of a batch are
    in flight at once, and decoding (CPU, GIL-bound in parts) stays on one thread per actor, so
    actors never fight over the GIL and I/O still overlaps compute.
    """

    def __init__(self, root: Store, io_threads: int | None = None) -> None:
        n = io_threads or int(os.environ.get("EXORAY_IO_THREADS", "8"))
        self.root = root
        self.pool = ThreadPoolExecutor(max_workers=max(1, n), thread_name_prefix="exoray-io")

    def map(self, relpaths: list[str], fn: Callable[[bytes, str], T]) -> list[T | ItemError]:
        futures = [self.pool.submit(read_image_bytes, self.root, r) for r in relpaths]
        return [apply_decoder(f.result(), r, fn) for r, f in zip(relpaths, futures, strict=True)]
