"""Weights cache: hub downloads land once in `cache_dir`, loads read a copy on local disk.

`cache_dir` is BASE/models by default in a pipeline; on Colab that is Drive, so a runtime restart
does not download again. Reading hundreds of MB through the Drive mount for every worker is slow,
so a checkpoint on another filesystem than the local staging folder is first copied there
(`$TMPDIR/exoray-models/...`), and the copy is reused while size and mtime match.

A local checkpoint (file or folder) is accepted wherever a hub id is.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path

COMPLETE_MARKER = ".exoray-complete"
_HUB_PREFIXES = ("hf-hub:", "hf:")
_STAGE_MODES = ("auto", "always", "never")
_HASH_CACHE: dict[tuple[str, int, int], str] = {}


def default_cache_dir() -> Path:
    """Where downloads go when no cache_dir is given: $EXORAY_MODELS_DIR or ~/.cache/exoray/models."""
    env = os.environ.get("EXORAY_MODELS_DIR")
    return Path(env) if env else Path.home() / ".cache" / "exoray" / "models"


def local_models_dir() -> Path:
    """Local-disk staging folder: $EXORAY_LOCAL_MODELS_DIR or $TMPDIR/exoray-models."""
    env = os.environ.get("EXORAY_LOCAL_MODELS_DIR")
    return Path(env) if env else Path(tempfile.gettempdir()) / "exoray-models"


def hub_repo_id(source: str) -> str | None:
    """'hf:org/name', 'hf-hub:org/name' or a bare 'org/name' that is not a local path -> 'org/name'."""
    for prefix in _HUB_PREFIXES:
        if source.startswith(prefix):
            return source[len(prefix) :]
    parts = source.split("/")
    if (
        len(parts) == 2
        and all(parts)
        and not source.startswith((".", "~"))
        and not os.path.exists(source)
    ):
        return source
    return None


def safe_name(text: str) -> str:
    """A single path component derived from a hub id or model name."""
    return text.strip("/").replace("/", "--").replace(":", "-")


def download_hub_files(
    repo_id: str,
    dest: str | os.PathLike[str],
    files: Sequence[str | Sequence[str]],
    optional: Iterable[str] = (),
    *,
    mark: bool = True,
) -> Path:
    """Download files of one hub repo into `dest` (plain files, no symlinks), once.

    Each entry of `files` is a name or a tuple of alternatives tried in order (safetensors before
    pickle); `optional` names are fetched when the repo has them. A marker written last makes
    later calls (other workers, a restarted runtime) skip the hub entirely; callers assembling
    one folder from several downloads pass mark=False and call `write_marker` themselves.
    """
    dest = Path(dest)
    if (dest / COMPLETE_MARKER).is_file():
        return dest
    dest.mkdir(parents=True, exist_ok=True)
    got: list[str] = []
    for entry in files:
        alternatives = [entry] if isinstance(entry, str) else list(entry)
        name = next((n for n in alternatives if _fetch_hub_file(repo_id, n, dest)), None)
        if name is None:
            raise FileNotFoundError(
                f"hub repo {repo_id!r} has none of {alternatives}; pass a repo with the model's "
                "weights, or download them and pass checkpoint='/local/path'"
            )
        got.append(name)
    got.extend(name for name in optional if _fetch_hub_file(repo_id, name, dest))
    if mark:
        write_marker(dest, {"repo_id": repo_id, "files": got})
    return dest


def write_marker(folder: Path, info: dict[str, object]) -> None:
    """Mark `folder` complete (atomically), so readers never trust a half-written folder."""
    _atomic_write_text(folder / COMPLETE_MARKER, json.dumps(info, sort_keys=True))


def resolve_checkpoint(
    source: str | os.PathLike[str],
    *,
    cache_dir: str | os.PathLike[str],
    hub_files: Sequence[str | Sequence[str]] = (),
    hub_optional: Iterable[str] = (),
    stage: str | None = None,
) -> Path:
    """A hub id or local path -> a local path (file or folder) ready to load.

    Hub ids are downloaded into `cache_dir/hf/<org>--<name>` (see `download_hub_files`); every
    result then goes through `stage_locally`.
    """
    text = os.fspath(source)
    if os.path.exists(text):
        return stage_locally(Path(text), cache_dir=cache_dir, mode=stage)
    repo_id = hub_repo_id(text)
    if repo_id is None:
        raise FileNotFoundError(
            f"checkpoint {text!r} is neither an existing file or folder nor a hub id; pass a "
            "local path or 'org/name' (optionally prefixed 'hf:')"
        )
    if not hub_files:
        raise ValueError(f"no hub file list given to fetch {repo_id!r}")
    folder = download_hub_files(
        repo_id, Path(cache_dir) / "hf" / safe_name(repo_id), hub_files, hub_optional
    )
    return stage_locally(folder, cache_dir=cache_dir, mode=stage)


def stage_locally(
    path: str | os.PathLike[str],
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    local_root: str | os.PathLike[str] | None = None,
    mode: str | None = None,
) -> Path:
    """Copy a checkpoint file/folder to local disk unless it already is there; return the path to load.

    mode: 'auto' (default, or $EXORAY_STAGE_MODELS) copies when `path` is on another filesystem
    than the staging folder (Drive, NFS); 'always' copies anyway; 'never' loads in place.
    Files whose copy has the same size and mtime are not copied again; copies are written under a
    temporary name and renamed, so concurrent workers never read a partial file.
    """
    path = Path(path).absolute()
    mode = mode or os.environ.get("EXORAY_STAGE_MODELS", "auto")
    if mode not in _STAGE_MODES:
        raise ValueError(f"stage mode {mode!r} is not one of {_STAGE_MODES}")
    if not path.exists():
        raise FileNotFoundError(f"checkpoint path {str(path)!r} does not exist")
    root = Path(local_root) if local_root is not None else local_models_dir()
    root.mkdir(parents=True, exist_ok=True)
    root = root.absolute()
    if mode == "never" or _is_within(path, root):
        return path
    if mode == "auto" and os.stat(path).st_dev == os.stat(root).st_dev:
        return path
    if cache_dir is not None and _is_within(path, Path(cache_dir).absolute()):
        target = root / path.relative_to(Path(cache_dir).absolute())
    else:
        digest = hashlib.sha1(str(path).encode()).hexdigest()[:10]
        target = root / "external" / f"{digest}-{path.name}"
    if path.is_file():
        _copy_if_changed(path, target)
        return target
    for src in sorted(path.rglob("*")):
        rel = src.relative_to(path)
        if src.is_file() and not any(part.startswith(".") for part in rel.parts):
            _copy_if_changed(src, target / rel)
    return target


def weight_files(path: str | os.PathLike[str], patterns: Sequence[str]) -> list[Path]:
    """Files in folder `path` matching the first pattern that matches anything (or `path` itself)."""
    path = Path(path)
    if path.is_file():
        return [path]
    for pattern in patterns:
        found = sorted(p for p in path.glob(pattern) if p.is_file())
        if found:
            return found
    raise FileNotFoundError(
        f"no weight file matching {list(patterns)} in {str(path)!r}; point checkpoint= at the "
        "weights file or a folder holding it"
    )


def weights_hash(paths: str | os.PathLike[str] | Iterable[str | os.PathLike[str]]) -> str:
    """First 16 hex digits of the sha256 of the weight files' contents.

    One file: its own sha256 (matches `sha256sum`). Several: sha256 over their sorted
    'name digest' lines. File digests are cached by (path, size, mtime) in memory and in the
    staging folder, so each worker does not re-read gigabytes.
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    files = sorted((Path(p) for p in paths), key=lambda p: p.name)
    if not files:
        raise ValueError("weights_hash needs at least one file")
    digests = [_file_sha256(p) for p in files]
    if len(files) == 1:
        return digests[0][:16]
    joined = "".join(f"{p.name} {d}\n" for p, d in zip(files, digests, strict=True))
    return hashlib.sha256(joined.encode()).hexdigest()[:16]


# ----- helpers ---------------------------------------------------------------------------------


def _fetch_hub_file(repo_id: str, name: str, dest: Path) -> bool:
    """Download one file into `dest`; False when the repo has no such file."""
    try:
        from huggingface_hub import hf_hub_download
        from huggingface_hub.errors import (
            EntryNotFoundError,
            LocalEntryNotFoundError,
            OfflineModeIsEnabled,
        )
    except ImportError as exc:
        raise ImportError(
            f"downloading {repo_id!r} needs huggingface_hub: pip install huggingface_hub ({exc})"
        ) from exc
    try:
        hf_hub_download(repo_id, name, local_dir=dest)
    except (LocalEntryNotFoundError, OfflineModeIsEnabled, ConnectionError,
            *_network_errors()) as exc:
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise FileNotFoundError(
            f"cannot download {name!r} from hub repo {repo_id!r}: offline (HF_HUB_OFFLINE?) or no "
            f"network, and it is not yet in {str(dest)!r}; connect once, or pass checkpoint= a "
            f"local copy ({reason})"
        ) from exc
    except EntryNotFoundError:
        return False
    return True


def _network_errors() -> tuple[type[BaseException], ...]:
    """The HTTP client's transport errors (no DNS, refused, timeout): the hub is unreachable."""
    try:
        import httpx
    except ImportError:
        return ()
    return (httpx.TransportError,)


def _file_sha256(path: Path) -> str:
    st = path.stat()
    key = (str(path.absolute()), st.st_size, st.st_mtime_ns)
    if key in _HASH_CACHE:
        return _HASH_CACHE[key]
    disk_key = "|".join(map(str, key))
    cache_file = local_models_dir() / ".hashes.json"
    disk = _read_json(cache_file)
    digest = disk.get(disk_key)
    if not isinstance(digest, str):
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 22), b""):
                h.update(block)
        digest = h.hexdigest()
        disk = _read_json(cache_file)
        disk[disk_key] = digest
        with contextlib.suppress(OSError):  # the cache is an optimisation only
            cache_file.parent.mkdir(parents=True, exist_ok=True)
            _atomic_write_text(cache_file, json.dumps(disk))
    _HASH_CACHE[key] = digest
    return digest


def _read_json(path: Path) -> dict[str, object]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def _copy_if_changed(src: Path, dst: Path) -> None:
    st = src.stat()
    try:
        dt = dst.stat()
        if dt.st_size == st.st_size and dt.st_mtime_ns == st.st_mtime_ns:
            return
    except FileNotFoundError:
        pass
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.name}.tmp-{os.getpid()}")
    shutil.copy2(src, tmp)
    os.replace(tmp, dst)


def _is_within(path: Path, folder: Path) -> bool:
    try:
        path.relative_to(folder)
    except ValueError:
        return False
    return True


# ----- BASE/models on an object store ----------------------------------------------------------
# A BASE on S3/GCS keeps its weights cache there too (BASE/models), but nothing loads a model
# from a URI: each node mirrors the folder once into local disk and loads from the mirror. The
# driver pushes back what it fetched or built, so other nodes (and later runs) never touch the
# hub. A folder's COMPLETE_MARKER is copied after the folder's other files, so a node never
# trusts a half-copied model.

_MIRROR_SKIP = (".lock", ".tmp-")


def is_object_store(location: str | os.PathLike[str]) -> bool:
    """True for a URI BASE/models (s3://, gs://, ...), which must be mirrored before loading."""
    from exoray.storage.store import is_uri

    return is_uri(os.fspath(location)) and not os.fspath(location).startswith("file://")


def mirror_dir(uri: str) -> Path:
    """This node's local copy of the object-store cache ``uri`` (credentials never in the name)."""
    digest = hashlib.sha1(uri.split("?", 1)[0].encode()).hexdigest()[:12]
    return local_models_dir() / "object-store" / digest


def node_cache_dir(cache_dir: str | os.PathLike[str] | None) -> Path:
    """The folder to load weights from on this node.

    A path is itself; an object-store URI (BASE/models on S3) is mirrored into local disk once
    per node (concurrent actors wait on a lock, files already there are not fetched again).
    """
    if cache_dir is None:
        return default_cache_dir()
    text = os.fspath(cache_dir)
    return pull_models(text) if is_object_store(text) else Path(text)


def _marker_last(relpaths: Iterable[str]) -> list[str]:
    return sorted(relpaths, key=lambda r: (r.rsplit("/", 1)[-1] == COMPLETE_MARKER, r))


def _mirrored(rel: str) -> bool:
    name = rel.rsplit("/", 1)[-1]
    return not any(part in name for part in _MIRROR_SKIP)


def pull_models(uri: str) -> Path:
    """Copy what ``uri`` holds and this node lacks (by size) into :func:`mirror_dir`."""
    import fcntl

    from exoray.storage.store import Store

    store, local = Store(uri), mirror_dir(uri)
    local.mkdir(parents=True, exist_ok=True)
    with open(local / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one download per node, the other actors wait
        remote = {e.relpath: e.size for e in store.list_files("", recursive=True)
                  if _mirrored(e.relpath)}
        for rel in _marker_last(remote):
            dst = local / rel
            if dst.is_file() and dst.stat().st_size == remote[rel]:
                continue
            dst.parent.mkdir(parents=True, exist_ok=True)
            tmp = dst.with_name(f".{dst.name}.tmp-{os.getpid()}")
            with store.fs.open_input_stream(store.path(rel)) as src, open(tmp, "wb") as out:
                shutil.copyfileobj(src, out, length=8 << 20)
            os.replace(tmp, dst)
    return local


def push_models(local: str | os.PathLike[str], uri: str) -> list[str]:
    """Upload files of the local mirror that ``uri`` lacks (by size); returns their relpaths.

    Run by the driver after it fetched or built weights into the mirror, before workers start.
    """
    from exoray.storage.store import Store

    store, root = Store(uri), Path(local)
    remote = {e.relpath: e.size for e in store.list_files("", recursive=True)}
    here = {p.relative_to(root).as_posix(): p for p in root.rglob("*") if p.is_file()}
    todo = [r for r in here if _mirrored(r) and not any(
        part.startswith(".") and part != COMPLETE_MARKER for part in r.split("/"))
        and remote.get(r) != here[r].stat().st_size]
    for rel in _marker_last(todo):
        store.publish_file(str(here[rel]), rel)
    return _marker_last(todo)
