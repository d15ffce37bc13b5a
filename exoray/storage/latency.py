"""A storage wrapper that behaves like Google Drive or an object store: latency and bandwidth.

Local disk answers in microseconds, so read-ahead, part sizes and listing costs measured there say
nothing about Drive (tens of ms per open, a slow listing per folder, a rename that is a server
call) or S3 (a request per LIST page of 1,000 keys, ~20-50 ms to first byte). This module wraps any
pyarrow filesystem and adds, per call: ``open_ms`` for every file opened for reading or writing,
``list_ms`` per listing page of ``page`` entries (one call per folder for a non-recursive
listing, or per page of a recursive one), ``stat_ms`` per path looked up, ``rename_ms`` per move
and ``mb_s`` as a bandwidth cap on bytes read and written. It also counts every call, so tests
and benchmarks can say how many requests a code path makes, not only how long it took.

As a BASE location it is ``latency+<location>?profile=drive`` (any inner location, e.g.
``latency+file:///tmp/base?profile=s3&open_ms=30``): :class:`~exoray.storage.store.Store` builds
it, so Ray workers that rebuild a Store from its location sleep exactly like the driver.
"""

from __future__ import annotations

import io
import math
import threading
import time
from collections import Counter
from dataclasses import dataclass, fields, replace
from urllib.parse import parse_qsl, urlencode

import pyarrow as pa
import pyarrow.fs as pafs

SCHEME_PREFIX = "latency+"
QUERY_SCHEMES = ("s3://", "gs://", "gcs://", "abfs://", "abfss://", "hdfs://")  # take ?settings


@dataclass(frozen=True)
class LatencyProfile:
    """Seconds-per-call costs (given in ms) and a bandwidth cap; 0 means free / unlimited."""

    open_ms: float = 0.0
    list_ms: float = 0.0
    stat_ms: float = 0.0
    rename_ms: float = 0.0
    page: int = 1000  # entries per listing page (S3 ListObjectsV2 and Drive's files.list: 1000)
    mb_s: float = 0.0

    def with_overrides(self, values: dict[str, str]) -> LatencyProfile:
        known = {f.name: f.type for f in fields(self)}
        changes: dict[str, float | int] = {}
        for name, text in values.items():
            if name not in known:
                raise ValueError(f"latency store: unknown setting {name!r}; valid: profile, "
                                 f"{', '.join(known)}")
            try:
                changes[name] = int(text) if name == "page" else float(text)
            except ValueError:
                raise ValueError(f"latency store: {name}={text!r} is not a number") from None
        return replace(self, **changes)


# Per-call figures of the storage our users have; see docs/scale.md for where they come from.
PROFILES: dict[str, LatencyProfile] = {
    "none": LatencyProfile(),
    # Drive through the Colab FUSE mount: ~20 ms per open (issue 13's slow-storage figure),
    # a folder listing is an API call (~100 ms per 1000 entries), rename is a metadata call.
    "drive": LatencyProfile(open_ms=20, list_ms=100, stat_ms=10, rename_ms=50, mb_s=60),
    # An S3-compatible store from a VM in the same region: ~25 ms to first byte, ~30 ms per
    # LIST page of 1000 keys, HEAD ~15 ms; per-connection throughput ~100 MB/s.
    "s3": LatencyProfile(open_ms=25, list_ms=30, stat_ms=15, rename_ms=0, mb_s=100),
}


class CallCounter:
    """Thread-safe counts of storage calls by kind (open, list, list_page, stat, rename, ...)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.calls: Counter[str] = Counter()
        self.bytes_read = 0
        self.bytes_written = 0

    def add(self, kind: str, n: int = 1) -> None:
        with self._lock:
            self.calls[kind] += n

    def add_bytes(self, *, read: int = 0, written: int = 0) -> None:
        with self._lock:
            self.bytes_read += read
            self.bytes_written += written

    def reset(self) -> None:
        with self._lock:
            self.calls.clear()
            self.bytes_read = self.bytes_written = 0

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self.calls)


class _Throttled(io.RawIOBase):
    """A file object that sleeps ``len/bandwidth`` for every read or write."""

    def __init__(self, inner: pa.NativeFile, profile: LatencyProfile, counter: CallCounter,
                 writable: bool) -> None:
        self.inner, self.profile, self.counter, self._writable = inner, profile, counter, writable

    def _pay(self, nbytes: int, *, written: bool) -> None:
        if written:
            self.counter.add_bytes(written=nbytes)
        else:
            self.counter.add_bytes(read=nbytes)
        if self.profile.mb_s > 0 and nbytes:
            time.sleep(nbytes / (self.profile.mb_s * 1e6))

    def readable(self) -> bool:
        return not self._writable

    def writable(self) -> bool:
        return self._writable

    def seekable(self) -> bool:
        return self.inner.seekable()

    def seek(self, offset: int, whence: int = 0) -> int:
        return self.inner.seek(offset, whence)

    def tell(self) -> int:
        return self.inner.tell()

    def size(self) -> int:
        return self.inner.size()

    def read(self, size: int = -1) -> bytes:
        data = self.inner.read(None if size is None or size < 0 else size)
        self._pay(len(data), written=False)
        return data

    def readinto(self, buffer) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def write(self, data) -> int:
        self._pay(len(data), written=True)
        return self.inner.write(data)

    def close(self) -> None:
        if not self.closed:
            self.inner.close()
        super().close()


class LatencyHandler(pafs.FileSystemHandler):
    """pyarrow filesystem handler: the inner filesystem, slowed down and counted."""

    def __init__(self, inner: pafs.FileSystem, profile: LatencyProfile,
                 counter: CallCounter | None = None) -> None:
        self.inner, self.profile = inner, profile
        self.counter = counter if counter is not None else CallCounter()

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, LatencyHandler) and other.inner.equals(self.inner)
                and other.profile == self.profile)

    def __ne__(self, other: object) -> bool:
        return not self == other

    def _wait(self, kind: str, ms: float, n: int = 1) -> None:
        self.counter.add(kind, n)
        if ms > 0 and n > 0:
            time.sleep(ms * n / 1000)

    def get_type_name(self) -> str:
        return f"latency-{self.inner.type_name}"

    def normalize_path(self, path: str) -> str:
        return self.inner.normalize_path(path)

    def get_file_info(self, paths: list[str]) -> list[pafs.FileInfo]:
        self._wait("stat", self.profile.stat_ms, len(paths))
        return self.inner.get_file_info(paths)

    def get_file_info_selector(self, selector: pafs.FileSelector) -> list[pafs.FileInfo]:
        infos = self.inner.get_file_info(selector)
        # One request per page, one after another (each page needs the last one's token): a
        # recursive listing is a prefix listing without delimiter, a folder its own entries.
        pages = max(1, math.ceil(len(infos) / self.profile.page))
        self.counter.add("list")
        self._wait("list_page", self.profile.list_ms, pages)
        return infos

    def create_dir(self, path: str, recursive: bool) -> None:
        self.counter.add("mkdir")
        self.inner.create_dir(path, recursive=recursive)

    def delete_dir(self, path: str) -> None:
        self._wait("delete", self.profile.rename_ms)
        self.inner.delete_dir(path)

    def delete_dir_contents(self, path: str, missing_dir_ok: bool = False) -> None:
        self._wait("delete", self.profile.rename_ms)
        self.inner.delete_dir_contents(path, missing_dir_ok=missing_dir_ok)

    def delete_root_dir_contents(self) -> None:
        raise PermissionError("latency store: refusing to delete the root's contents")

    def delete_file(self, path: str) -> None:
        self._wait("delete", self.profile.rename_ms)
        self.inner.delete_file(path)

    def move(self, src: str, dest: str) -> None:
        self._wait("rename", self.profile.rename_ms)
        self.inner.move(src, dest)

    def copy_file(self, src: str, dest: str) -> None:
        self._wait("copy", self.profile.open_ms)
        self.inner.copy_file(src, dest)

    def _opened(self, inner: pa.NativeFile, writable: bool) -> pa.PythonFile:
        mode = "w" if writable else "r"
        return pa.PythonFile(_Throttled(inner, self.profile, self.counter, writable), mode=mode)

    def open_input_stream(self, path: str) -> pa.PythonFile:
        self._wait("open", self.profile.open_ms)
        return self._opened(self.inner.open_input_stream(path), False)

    def open_input_file(self, path: str) -> pa.PythonFile:
        self._wait("open", self.profile.open_ms)
        return self._opened(self.inner.open_input_file(path), False)

    def open_output_stream(self, path: str, metadata) -> pa.PythonFile:
        self._wait("open_write", self.profile.open_ms)
        return self._opened(self.inner.open_output_stream(path, metadata=metadata), True)

    def open_append_stream(self, path: str, metadata) -> pa.PythonFile:
        self._wait("open_write", self.profile.open_ms)
        return self._opened(self.inner.open_append_stream(path, metadata=metadata), True)


def is_latency_location(location: str) -> bool:
    return str(location).startswith(SCHEME_PREFIX)


def split_location(location: str) -> tuple[str, LatencyProfile]:
    """``latency+file:///x?profile=drive&open_ms=5`` → (``file:///x``, the profile).

    Settings named like :class:`LatencyProfile` fields (and ``profile``) belong to the wrapper;
    any other query parameter stays with the inner location (e.g. an S3 ``endpoint_override``).
    """
    inner = location[len(SCHEME_PREFIX):]
    base, _, query = inner.partition("?")
    ours = {f.name for f in fields(LatencyProfile)} | {"profile"}
    mine, theirs = {}, []
    for name, value in parse_qsl(query, keep_blank_values=True):
        if name in ours:
            mine[name] = value
        else:
            theirs.append((name, value))
    if theirs and not base.startswith(QUERY_SCHEMES):
        raise ValueError(f"latency store {location!r}: unknown setting {theirs[0][0]!r}; valid: "
                         f"{', '.join(sorted(ours))}")
    name = mine.pop("profile", "none")
    if name not in PROFILES:
        raise ValueError(f"latency store {location!r}: unknown profile {name!r}; valid: "
                         f"{', '.join(PROFILES)}")
    if not base:
        raise ValueError(f"latency store {location!r} names no inner location; use e.g. "
                         "latency+file:///path/to/base?profile=drive")
    return (f"{base}?{urlencode(theirs)}" if theirs else base), PROFILES[name].with_overrides(mine)


def wrap(fs: pafs.FileSystem, profile: LatencyProfile,
         counter: CallCounter | None = None) -> tuple[pafs.PyFileSystem, CallCounter]:
    """``fs`` behind ``profile``'s latency; returns the wrapped filesystem and its counter."""
    handler = LatencyHandler(fs, profile, counter)
    return pafs.PyFileSystem(handler), handler.counter


def counter_of(fs: pafs.FileSystem) -> CallCounter | None:
    """The call counter of a wrapped filesystem (None for any other filesystem)."""
    handler = getattr(fs, "handler", None)
    return handler.counter if isinstance(handler, LatencyHandler) else None
