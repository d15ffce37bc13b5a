"""One filesystem interface for BASE: a local path, a FUSE mount (Drive) or a pyarrow URI.

Every read and write of BASE goes through :class:`Store`, so the commit protocol is written once
and works the same on local disk, Google Drive and object stores (``s3://``, ``gs://``,
``file://``).
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow.fs as pafs

from exoray.storage.latency import (
    CallCounter,
    counter_of,
    is_latency_location,
    split_location,
    wrap,
)
from exoray.storage.listing import list_tree

URI_SCHEMES = ("s3://", "gs://", "gcs://", "file://", "hdfs://", "abfs://", "abfss://")


def is_uri(location: str) -> bool:
    """True for ``scheme://`` locations that must go through pyarrow's filesystem layer."""
    return str(location).startswith(URI_SCHEMES) or is_latency_location(location)


@dataclass(frozen=True)
class FileEntry:
    """A file found by :meth:`Store.list_files`: path relative to the listed folder."""

    relpath: str
    size: int
    mtime_ns: int


class Store:
    """A root folder on some filesystem, addressed with posix-style relative paths.

    ``Store("/content/drive/MyDrive/x")`` and ``Store("file:///content/drive/MyDrive/x")`` are the
    same folder: the first uses the OS directly (fast renames, scandir), the second pyarrow's
    filesystem (the same code path an ``s3://`` BASE uses).
    """

    def __init__(self, location: str | os.PathLike[str]) -> None:
        location = os.fspath(location)
        if not location:
            raise ValueError("BASE location is empty: pass a folder path or a URI like s3://bucket/x")
        self.location = location
        if is_latency_location(location):  # a Drive/S3-like test double around another store
            inner_location, profile = split_location(location)
            inner = Store(inner_location)
            self.fs, _ = wrap(inner.fs, profile)
            self.root, self.local = inner.root, False
            self.atomic_put = inner.atomic_put
            return
        if is_uri(location):
            fs, root = pafs.FileSystem.from_uri(location)
            self.fs: pafs.FileSystem = fs
            self.root = root.rstrip("/")
            self.local = False
        else:
            self.fs = pafs.LocalFileSystem()
            self.root = str(Path(location).expanduser().resolve())
            self.local = True
            # Absolute, so a Ray worker with another working directory finds the same folder.
            self.location = self.root
        # Object stores make a single put atomic; a rename there is copy+delete, so skip it.
        self.atomic_put = not self.local and self.fs.type_name not in ("local",)

    def __repr__(self) -> str:
        return f"Store({self.location!r})"

    def __reduce__(self):  # pickled into Ray workers by location, not by live filesystem handle
        return (Store, (self.location,))

    # -- paths -----------------------------------------------------------------------------
    def path(self, *parts: str) -> str:
        """Full filesystem path of ``parts`` under the root (for this store's ``fs``)."""
        rel = "/".join(p.strip("/") for p in parts if p)
        return f"{self.root}/{rel}" if rel else self.root

    def uri(self, *parts: str) -> str:
        """A location string for ``parts`` that can build a new Store (path or URI).

        A URI keeps its query (an S3 ``endpoint_override``, a latency profile), so the new Store
        talks to the same server the same way.
        """
        if self.local:
            return self.path(*parts)
        head, sep, query = self.location.partition("?")
        rel = "/".join(p.strip("/") for p in parts if p)
        head = f"{head.rstrip('/')}/{rel}" if rel else head
        return f"{head}{sep}{query}"

    @property
    def counter(self) -> CallCounter | None:
        """Storage calls made so far, for a ``latency+`` store (None for real storage)."""
        return counter_of(self.fs)

    def local_path(self, *parts: str) -> str | None:
        """OS path for local/FUSE stores (used to hand files to libraries), else None."""
        if self.local:
            return self.path(*parts)
        if self.fs.type_name == "local":
            return self.path(*parts)
        return None

    # -- queries ---------------------------------------------------------------------------
    def exists(self, *parts: str) -> bool:
        if self.local:
            return os.path.exists(self.path(*parts))
        return self.fs.get_file_info(self.path(*parts)).type != pafs.FileType.NotFound

    def is_dir(self, *parts: str) -> bool:
        if self.local:
            return os.path.isdir(self.path(*parts))
        return self.fs.get_file_info(self.path(*parts)).type == pafs.FileType.Directory

    def list_files(self, folder: str, *, suffix: str = "", recursive: bool = False) -> list[FileEntry]:
        """Files in ``folder`` (sorted by relpath); a missing folder is simply empty."""
        return sorted(self._iter_files(folder, suffix, recursive), key=lambda e: e.relpath)

    def _iter_files(self, folder: str, suffix: str, recursive: bool) -> Iterator[FileEntry]:
        base = self.path(folder)
        if self.local:
            if not os.path.isdir(base):
                return
            stack = [("", base)]
            while stack:
                prefix, current = stack.pop()
                with os.scandir(current) as it:
                    for entry in it:
                        rel = f"{prefix}{entry.name}"
                        if entry.is_dir(follow_symlinks=False):
                            if recursive:
                                stack.append((rel + "/", entry.path))
                        elif entry.name.endswith(suffix) and entry.is_file():
                            st = entry.stat()
                            yield FileEntry(rel, st.st_size, st.st_mtime_ns)
            return
        if recursive:  # sub-trees listed concurrently: pages of one prefix are sequential
            infos = list_tree(self.fs, base)
        else:
            infos = self.fs.get_file_info(pafs.FileSelector(base, allow_not_found=True))
        for info in infos:
            if info.type != pafs.FileType.File or not info.path.endswith(suffix):
                continue
            rel = info.path[len(base) :].lstrip("/")
            mtime_ns = int(info.mtime_ns) if info.mtime_ns is not None else 0
            yield FileEntry(rel, int(info.size or 0), mtime_ns)

    def size(self, *parts: str) -> int:
        return int(self.fs.get_file_info(self.path(*parts)).size or 0)

    # -- reads -----------------------------------------------------------------------------
    def read_bytes(self, *parts: str) -> bytes:
        if self.local:
            with open(self.path(*parts), "rb") as f:
                return f.read()
        with self.fs.open_input_stream(self.path(*parts)) as f:
            return f.read()

    def open_input_file(self, *parts: str):
        """Random-access file handle (parquet footers need seeking)."""
        return self.fs.open_input_file(self.path(*parts))

    # -- writes ----------------------------------------------------------------------------
    def makedirs(self, *parts: str) -> None:
        if self.local:
            os.makedirs(self.path(*parts), exist_ok=True)
        else:
            self.fs.create_dir(self.path(*parts), recursive=True)

    def publish_file(self, local_file: str, *parts: str) -> None:
        """Copy a finished local file to ``parts`` so readers see all of it or nothing.

        Local/FUSE: copy to a hidden ``.tmp-`` name in the destination folder, fsync, rename.
        Object stores: one put, which is atomic there.
        """
        dest = self.path(*parts)
        folder, name = dest.rsplit("/", 1)
        if self.local:
            os.makedirs(folder, exist_ok=True)
            tmp = f"{folder}/.tmp-{uuid.uuid4().hex[:12]}-{name}"
            try:
                with open(local_file, "rb") as src, open(tmp, "wb") as out:
                    shutil.copyfileobj(src, out, length=8 << 20)
                    out.flush()
                    os.fsync(out.fileno())
                os.replace(tmp, dest)
            finally:
                if os.path.exists(tmp):
                    os.remove(tmp)
            return
        self.fs.create_dir(folder, recursive=True)
        if self.atomic_put:
            pafs.copy_files(local_file, dest, destination_filesystem=self.fs)
            return
        tmp = f"{folder}/.tmp-{uuid.uuid4().hex[:12]}-{name}"
        pafs.copy_files(local_file, tmp, destination_filesystem=self.fs)
        self.fs.move(tmp, dest)

    def write_bytes_atomic(self, data: bytes, *parts: str, staging_dir: str | None = None) -> None:
        """Write a small file (JSON, YAML) with the same all-or-nothing guarantee."""
        from exoray.storage.staging import staging_file

        with staging_file(suffix="-" + parts[-1].rsplit("/", 1)[-1], staging_dir=staging_dir) as tmp:
            with open(tmp, "wb") as f:
                f.write(data)
            self.publish_file(tmp, *parts)

    def move(self, src: tuple[str, ...], dest: tuple[str, ...]) -> None:
        dest_path = self.path(*dest)
        if self.local:
            os.makedirs(os.path.dirname(dest_path), exist_ok=True)
            os.replace(self.path(*src), dest_path)
        else:
            self.fs.create_dir(dest_path.rsplit("/", 1)[0], recursive=True)
            self.fs.move(self.path(*src), dest_path)

    def delete(self, *parts: str) -> None:
        if self.local:
            p = self.path(*parts)
            if os.path.isdir(p):
                shutil.rmtree(p)
            elif os.path.exists(p):
                os.remove(p)
            return
        info = self.fs.get_file_info(self.path(*parts))
        if info.type == pafs.FileType.Directory:
            self.fs.delete_dir(self.path(*parts))
        elif info.type == pafs.FileType.File:
            self.fs.delete_file(self.path(*parts))
