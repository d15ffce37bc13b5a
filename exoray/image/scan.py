"""Walk an image root: the images to list, and every entry skipped with the reason why.

Why the reasons matter: a rescan must tell "gone" from "could not look". A folder that cannot be
listed (a Drive hiccup, permissions) is reported as ``unlistable`` so the manifest keeps the
images it knew there instead of marking them deleted; an unlistable root is an error.

Rules, local and URI roots alike: hidden names (``.x``) and AppleDouble files (``._x``) are
skipped, folders named like images (``photo.jpg/``) are not entered, files whose extension is not
in the scanned set (:mod:`exoray.image.extensions`) are skipped. Local roots also: symlinks
leading outside the root are skipped; each real folder is walked once (tracked by
``(st_dev, st_ino)``), real paths before symlinked ones so relpaths (and image ids) do not depend
on listing order; a symlinked folder that leads back to one of its ancestors is a ``loop``, one
leading to a folder already walked elsewhere is ``already_scanned``. Skipped folders are
reported once, with a trailing ``/``, and their contents are not looked at.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field

import pyarrow.fs as pafs

from exoray.image.extensions import resolve_extensions
from exoray.storage.store import is_uri

# Skip reasons, as written to manifests/skipped.parquet.
UNKNOWN_EXTENSION = "unknown_extension"
HIDDEN = "hidden"
APPLEDOUBLE = "appledouble"
IMAGE_NAMED_FOLDER = "image_named_folder"
OUTSIDE_ROOT = "outside_root"
LOOP = "loop"
ALREADY_SCANNED = "already_scanned"
UNLISTABLE = "unlistable"
BROKEN_LINK = "broken_link"
NOT_A_FILE = "not_a_file"
UNREADABLE = "unreadable"
SKIP_REASONS = (UNKNOWN_EXTENSION, HIDDEN, APPLEDOUBLE, IMAGE_NAMED_FOLDER, OUTSIDE_ROOT, LOOP,
                ALREADY_SCANNED, UNLISTABLE, BROKEN_LINK, NOT_A_FILE, UNREADABLE)

_FIX_ACCESS = ("check that it exists and is readable (on Colab, remount Drive with "
               "drive.mount('/content/drive', force_remount=True)) and rerun; "
               "the manifest was not changed")


@dataclass(frozen=True)
class ScannedFile:
    relpath: str
    size: int
    mtime_ns: int


@dataclass(frozen=True)
class Skipped:
    """One entry the scan did not list; folders end with ``/``."""

    relpath: str
    reason: str
    detail: str = ""


@dataclass
class ScanResult:
    files: list[ScannedFile] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    extensions: frozenset[str] = frozenset()

    def with_reason(self, reason: str) -> list[str]:
        return [s.relpath for s in self.skipped if s.reason == reason]


def image_extension(name: str, extensions: frozenset[str]) -> str | None:
    """Lower-case extension if ``name`` is an image file name we scan, else None."""
    if "." not in name:
        return None
    ext = name.rsplit(".", 1)[1].lower()
    return ext if ext in extensions else None


def _name_reason(name: str) -> str | None:
    if name.startswith("._"):
        return APPLEDOUBLE
    if name.startswith("."):
        return HIDDEN  # hidden files and folders, editor/OS droppings
    return None


class _LocalWalk:
    """One scan of a local/FUSE root: scandir, one stat per image, each real folder once."""

    def __init__(self, root: str, extensions: frozenset[str]) -> None:
        self.root = root
        self.real_root = os.path.realpath(root)
        self.extensions = extensions
        self.result = ScanResult(extensions=extensions)
        self.visited: dict[tuple[int, int], str] = {}  # (st_dev, st_ino) -> relpath walked
        self.linked: list[tuple[str, str]] = []  # symlinked folders inside root, walked last

    def run(self) -> ScanResult:
        st = _stat_root(self.root)
        self.visited[(st.st_dev, st.st_ino)] = ""
        self._walk("", self.root)
        while self.linked:
            self.linked.sort(reverse=True)  # shortest/smallest relpath first, as on every scan
            rel, path = self.linked.pop()
            try:
                st = os.stat(path)
            except OSError as exc:
                self._skip(rel, UNREADABLE, exc.strerror or str(exc))
                continue
            if self._seen(rel, st):
                continue
            self._walk(rel, path)
        return self.result

    def _skip(self, rel: str, reason: str, detail: str = "") -> None:
        self.result.skipped.append(Skipped(rel, reason, detail))

    def _seen(self, rel: str, st: os.stat_result) -> bool:
        """Record folder ``rel``; True (and reported) if its real folder was already walked."""
        key = (st.st_dev, st.st_ino)
        first = self.visited.get(key)
        if first is None:
            self.visited[key] = rel
            return False
        reason = LOOP if rel.startswith(first) else ALREADY_SCANNED
        self._skip(rel, reason, f"same folder as {first or './'}")
        return True

    def _walk(self, rel0: str, path0: str) -> None:
        stack = [(rel0, path0)]
        while stack:
            prefix, folder = stack.pop()
            try:
                with os.scandir(folder) as it:
                    for entry in it:
                        self._entry(prefix, entry, stack)
            except OSError as exc:  # listing failed (entries handle their own errors)
                if not prefix:
                    raise _root_error(self.root, exc) from exc
                self._skip(prefix, UNLISTABLE, exc.strerror or str(exc))

    def _entry(self, prefix: str, entry: os.DirEntry[str], stack: list[tuple[str, str]]) -> None:
        name, rel = entry.name, prefix + entry.name
        try:
            reason = _name_reason(name)
            if reason is not None:
                self._skip(rel + "/" if entry.is_dir() else rel, reason)
                return
            is_link = entry.is_symlink()
            if is_link:
                target = os.path.realpath(entry.path)
                if not (target == self.real_root or target.startswith(self.real_root + os.sep)):
                    self._skip(rel, OUTSIDE_ROOT, target)
                    return
            if entry.is_dir():
                rel += "/"
                if image_extension(name, self.extensions) is not None:
                    self._skip(rel, IMAGE_NAMED_FOLDER)  # e.g. a "photo.jpg/" bundle folder
                elif is_link:
                    self.linked.append((rel, entry.path))
                elif not self._seen(rel, entry.stat(follow_symlinks=False)):
                    stack.append((rel, entry.path))
                return
            if image_extension(name, self.extensions) is None:
                self._skip(rel, UNKNOWN_EXTENSION)
                return
            if not entry.is_file():
                self._skip(rel, BROKEN_LINK if is_link else NOT_A_FILE)
                return
            st = entry.stat()
        except OSError as exc:  # removed mid-scan, permission on the file itself
            self._skip(rel, UNREADABLE, exc.strerror or str(exc))
            return
        self.result.files.append(ScannedFile(rel, st.st_size, st.st_mtime_ns))


def _root_error(root: str, exc: OSError) -> OSError:
    cls = PermissionError if isinstance(exc, PermissionError) else OSError
    return cls(f"cannot list image folder {root!r} ({exc.strerror or exc}); {_FIX_ACCESS}")


def _stat_root(root: str) -> os.stat_result:
    """The root's stat, or a one-line error saying what is wrong with ``--images``."""
    try:
        st = os.stat(root)
    except FileNotFoundError:
        raise FileNotFoundError(
            f"image folder {root!r} does not exist; pass --images DIR pointing at your images"
        ) from None
    except OSError as exc:
        raise _root_error(root, exc) from exc
    if not os.path.isdir(root):
        raise NotADirectoryError(
            f"--images {root!r} is a file, not a folder; pass the folder that holds your images "
            f"(e.g. --images {os.path.dirname(root) or '.'!r})"
        )
    return st


def scan_local(root: str, extensions: str | Iterable[str] | None = None) -> ScanResult:
    """Scan a local/FUSE folder (see module docstring for the rules)."""
    return _LocalWalk(root, resolve_extensions(extensions)).run()


def scan_uri(uri: str, extensions: str | Iterable[str] | None = None) -> ScanResult:
    """List an object-store/URI root by prefix (sub-trees listed in parallel), same skip rules.

    Goes through :class:`Store`, so query options (``endpoint_override``) and slow-storage
    wrappers (``latency+...``) apply to image roots as they do to BASE."""
    from exoray.storage.listing import list_tree
    from exoray.storage.store import Store

    exts = resolve_extensions(extensions)
    result = ScanResult(extensions=exts)
    store = Store(uri)
    fs, base = store.fs, store.root.rstrip("/")
    kind = fs.get_file_info(base).type
    if kind == pafs.FileType.NotFound:
        raise FileNotFoundError(
            f"image folder {uri!r} does not exist; pass --images URI pointing at your images"
        )
    if kind == pafs.FileType.File:
        raise NotADirectoryError(
            f"--images {uri!r} is a file, not a folder; pass the folder that holds your images"
        )
    try:
        infos = list_tree(fs, base, allow_not_found=False)
    except OSError as exc:
        raise OSError(f"cannot list image folder {uri!r} ({exc}); check access to it and "
                      "rerun; the manifest was not changed") from exc
    reported: set[str] = set()
    for info in infos:
        if info.type != pafs.FileType.File:
            continue
        rel = info.path[len(base) :].lstrip("/")
        pieces = rel.split("/")
        skip = _uri_folder_skip(pieces[:-1], exts)
        if skip is not None:
            if skip.relpath not in reported:
                reported.add(skip.relpath)
                result.skipped.append(skip)
            continue
        reason = _name_reason(pieces[-1])
        if reason is None and image_extension(pieces[-1], exts) is None:
            reason = UNKNOWN_EXTENSION
        if reason is not None:
            result.skipped.append(Skipped(rel, reason))
            continue
        mtime_ns = int(info.mtime_ns) if info.mtime_ns is not None else 0
        result.files.append(ScannedFile(rel, int(info.size or 0), mtime_ns))
    return result


def _uri_folder_skip(folders: list[str], exts: frozenset[str]) -> Skipped | None:
    """The outermost skipped folder on a listed file's path, if any."""
    for i, name in enumerate(folders):
        reason = _name_reason(name)
        if reason is None and image_extension(name, exts) is not None:
            reason = IMAGE_NAMED_FOLDER
        if reason is not None:
            return Skipped("/".join(folders[: i + 1]) + "/", reason)
    return None


def scan_root(root: str, extensions: str | Iterable[str] | None = None) -> ScanResult:
    """Scan a local folder or a URI; raises a one-line error if the root itself is unusable."""
    return scan_uri(root, extensions) if is_uri(root) else scan_local(root, extensions)
