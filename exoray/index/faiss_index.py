"""Build, grow, search, save and load faiss indices over L2-normalised float32 vectors.

Cosine similarity is the inner product of unit vectors, so every index uses
``METRIC_INNER_PRODUCT`` and scores are cosines (higher is closer). Rows are positions
0..ntotal-1 in insertion order; the row -> image_id map lives next to the index file
(``<name>.ids.parquet``) because faiss only knows integers.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from exoray.index._faiss import require_faiss
from exoray.index.ids import as_id_array, check_unique_ids
from exoray.index.params import (
    HNSW_EF_CONSTRUCTION,
    HNSW_EF_SEARCH,
    HNSW_M,
    INDEX_KINDS,
    check_kind,
    choose_index_kind,
    ivfpq_params,
)
from exoray.index.vectors import as_matrix

if TYPE_CHECKING:
    import faiss

__all__ = [
    "INDEX_FORMAT",
    "IndexFileError",
    "IndexPaths",
    "add_to_index",
    "available_indices",
    "build_index",
    "choose_index_kind",
    "index_kind",
    "index_paths",
    "index_supports_add",
    "load_index_dir",
    "save_index_dir",
    "search_index",
    "search_settings",
]

INDEX_FORMAT = 1
"""Bumped when the on-disk layout of the three files changes."""

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


class IndexFileError(RuntimeError):
    """An index on disk is truncated, corrupt or inconsistent; the fix is always a rebuild."""

    def __init__(self, path: Path, name: str, why: str) -> None:
        self.path = path
        self.name = name
        super().__init__(
            f"index {name!r} at {path} is unreadable: {why}. Rebuild it with "
            f"`exoray index BASE --model {name} --rebuild`"
        )


@dataclass(frozen=True)
class IndexPaths:
    """The three files that make up one saved index."""

    index: Path
    ids: Path
    meta: Path

    def all(self) -> tuple[Path, Path, Path]:
        """Files in publish order: the meta file goes last and marks the set complete."""
        return (self.index, self.ids, self.meta)


# --------------------------------------------------------------------------- build / search


def build_index(
    vectors: np.ndarray,
    kind: str = "auto",
    *,
    seed: int = 0,
    hnsw_m: int = HNSW_M,
    ef_construction: int = HNSW_EF_CONSTRUCTION,
) -> faiss.Index:
    """Build an inner-product index of ``kind`` ('auto', 'flat', 'hnsw', 'ivfpq') over ``vectors``.

    ``vectors`` must be L2-normalised (n, dim) rows. 'auto' asks ``choose_index_kind``.
    Search defaults (efSearch, nprobe, re-rank factor) are set on the index and saved with
    it. ``seed`` drives IVF-PQ's training sample and k-means; HNSW's graph is built in
    parallel and is not bit-reproducible across runs (its search results are stable enough
    for tests that compare recall, not rows). ``hnsw_m`` / ``ef_construction`` trade HNSW
    build time for recall when a big build on few cores is too slow.
    """
    x = as_matrix(vectors)
    n, dim = x.shape
    if n == 0:
        raise ValueError("build_index needs at least one vector; got an empty array")
    if kind == "auto":
        kind = choose_index_kind(n, dim)
    check_kind(kind, INDEX_KINDS)
    faiss = require_faiss()
    if kind == "flat":
        index = faiss.IndexFlatIP(dim)
    elif kind == "hnsw":
        for label, value in (("hnsw_m", hnsw_m), ("ef_construction", ef_construction)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 2:
                raise ValueError(f"{label} must be an integer >= 2; got {value!r}")
        index = faiss.IndexHNSWFlat(dim, int(hnsw_m), faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = int(ef_construction)
        index.hnsw.efSearch = HNSW_EF_SEARCH
    else:
        index = _trained_ivfpq(x, seed)
    index.add(x)
    return index


def _trained_ivfpq(x: np.ndarray, seed: int) -> faiss.Index:
    """IVF-PQ for candidates + 8-bit scalar-quantised copy for exact-ish re-ranking, trained."""
    faiss = require_faiss()
    n, dim = x.shape
    p = ivfpq_params(n, dim)
    quantizer = faiss.IndexFlatIP(dim)
    ivf = faiss.IndexIVFPQ(quantizer, dim, p.nlist, p.m, p.nbits, faiss.METRIC_INNER_PRODUCT)
    # Fewer k-means iterations and a 64-per-centroid PQ sample: training dominated build
    # time (M codebooks of 256) yet the re-rank stage hides the small loss in code quality.
    ivf.cp.seed = seed
    ivf.cp.niter = 10
    ivf.pq.cp.seed = seed
    ivf.pq.cp.niter = 10
    ivf.pq.cp.max_points_per_centroid = 64
    ivf.nprobe = p.nprobe
    refine = faiss.IndexScalarQuantizer(
        dim, faiss.ScalarQuantizer.QT_8bit, faiss.METRIC_INNER_PRODUCT
    )
    index = faiss.IndexRefine(ivf, refine)
    index.k_factor = float(p.k_factor)
    rows = np.random.default_rng(seed).choice(n, size=p.n_train, replace=False)
    index.train(x[np.sort(rows)])
    return index


def index_supports_add(kind: str) -> bool:
    """Whether vectors can be appended to an index of ``kind`` without a rebuild.

    All three kinds can: flat and hnsw trivially, ivfpq with the coarse lists and codebooks
    trained at build time -- fine while new vectors come from the same model, but rebuild
    once the index has grown several-fold so nlist matches the new size.
    """
    check_kind(kind, INDEX_KINDS)
    return True


def add_to_index(index: faiss.Index, vectors: np.ndarray) -> int:
    """Append L2-normalised ``vectors`` as rows ntotal.. of ``index``; returns the new ntotal."""
    x = as_matrix(vectors, dim=index.d)
    if not index.is_trained:
        raise ValueError("cannot add to an untrained index; build it with build_index first")
    if len(x):
        index.add(x)
    return int(index.ntotal)


def search_index(index: faiss.Index, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(scores, rows)``, both (n_queries, k), best first; scores are cosines.

    When the index holds fewer than ``k`` reachable vectors, the tail of a row is padded
    with row id -1 (and a meaningless score): callers must drop ``rows < 0``. A 1-D query is
    treated as one row.
    """
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be a positive integer; got {k!r}")
    q = as_matrix(queries, name="queries", dim=index.d)
    scores, rows = index.search(q, int(k))
    return scores, rows


def index_kind(index: faiss.Index) -> str:
    """Name the kind of a built or loaded index ('flat', 'hnsw', 'ivfpq'), or raise."""
    faiss = require_faiss()
    idx = faiss.downcast_index(index)
    metric_ok = idx.metric_type == faiss.METRIC_INNER_PRODUCT
    if isinstance(idx, faiss.IndexHNSWFlat) and metric_ok:
        return "hnsw"
    if isinstance(idx, faiss.IndexFlat) and metric_ok:
        return "flat"
    if isinstance(idx, faiss.IndexRefine):
        idx = faiss.downcast_index(idx.base_index)
    if isinstance(idx, faiss.IndexIVFPQ) and idx.metric_type == faiss.METRIC_INNER_PRODUCT:
        return "ivfpq"
    raise ValueError(
        f"unsupported faiss index {type(idx).__name__} (metric {idx.metric_type}); exoray "
        f"builds inner-product IndexFlat, IndexHNSWFlat and IndexIVFPQ (+ IndexRefine): "
        f"{', '.join(INDEX_KINDS)}"
    )


def search_settings(index: faiss.Index) -> dict[str, float]:
    """The search-time knobs of ``index`` (recorded in the meta file for humans)."""
    faiss = require_faiss()
    idx = faiss.downcast_index(index)
    if isinstance(idx, faiss.IndexHNSWFlat):
        return {"efSearch": int(idx.hnsw.efSearch), "efConstruction": int(idx.hnsw.efConstruction)}
    out: dict[str, float] = {}
    if isinstance(idx, faiss.IndexRefine):
        out["k_factor"] = float(idx.k_factor)
    try:
        ivf = faiss.extract_index_ivf(idx)
    except RuntimeError:
        return out
    out.update(nlist=int(ivf.nlist), nprobe=int(ivf.nprobe))
    return out


# --------------------------------------------------------------------------- save / load


def index_paths(local_dir: str | os.PathLike[str], name: str) -> IndexPaths:
    """The file names of index ``name`` inside ``local_dir`` (nothing is created)."""
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise ValueError(
            f"index name must be letters, digits, '.', '_' or '-' (e.g. 'clip'); got {name!r}"
        )
    root = Path(local_dir)
    return IndexPaths(
        index=root / f"{name}.faiss",
        ids=root / f"{name}.ids.parquet",
        meta=root / f"{name}.meta.json",
    )


def save_index_dir(
    local_dir: str | os.PathLike[str],
    index: faiss.Index,
    image_ids: list[str] | np.ndarray,
    meta: dict[str, Any],
    *,
    name: str | None = None,
) -> IndexPaths:
    """Write ``<name>.faiss``, ``<name>.ids.parquet`` and ``<name>.meta.json`` into ``local_dir``.

    ``meta`` must hold ``model_id``; ``parts`` (part files covered) defaults to []. The
    facts the index knows (dim, kind, count, search settings) and versions are filled in and
    override ``meta``; ``built_at`` is kept if given. ``name`` defaults to ``meta['name']``,
    else ``model_id`` made file-safe. Each file is written under a temporary name and renamed,
    meta last, so a reader never sees a half-written set. Returns the paths written.
    """
    if "model_id" not in meta:
        raise ValueError(f"meta must include 'model_id'; got keys {sorted(meta)}")
    name = name or meta.get("name") or re.sub(r"[^A-Za-z0-9._-]+", "_", str(meta["model_id"]))
    paths = index_paths(local_dir, name)
    ids = as_id_array(image_ids)
    if len(ids) != index.ntotal:
        raise ValueError(
            f"{len(ids)} image_ids given for an index of {index.ntotal} vectors; they must match"
        )
    check_unique_ids(ids)
    from exoray import __version__

    faiss = require_faiss()
    full = dict(meta)
    full.update(
        name=name,
        model_id=str(meta["model_id"]),
        dim=int(index.d),
        kind=index_kind(index),
        count=int(index.ntotal),
        parts=list(meta.get("parts", [])),
        built_at=meta.get("built_at") or datetime.now(timezone.utc).isoformat(timespec="seconds"),
        exoray_version=__version__,
        faiss_version=faiss.__version__,
        format=INDEX_FORMAT,
        search=search_settings(index),
    )
    text = json.dumps(full, indent=2, sort_keys=True)  # fail before touching disk
    paths.meta.parent.mkdir(parents=True, exist_ok=True)
    _atomic_write(paths.index, lambda tmp: faiss.write_index(index, str(tmp)))
    table = pa.table(
        {
            "row": pa.array(np.arange(len(ids), dtype=np.int64)),
            "image_id": pa.array(ids, pa.string()),
        }
    )
    _atomic_write(paths.ids, lambda tmp: pq.write_table(table, tmp))
    _atomic_write(paths.meta, lambda tmp: tmp.write_text(text + "\n", encoding="utf-8"))
    return paths


def load_index_dir(
    local_dir: str | os.PathLike[str], name: str
) -> tuple[faiss.Index, np.ndarray, dict[str, Any]]:
    """Read index ``name`` from ``local_dir``: ``(index, image_ids, meta)``.

    ``image_ids[row]`` is the image of faiss row ``row`` (object array of str). A missing
    index raises FileNotFoundError listing the indices present; a truncated, corrupt or
    mutually inconsistent file set raises IndexFileError, which says how to rebuild.
    """
    paths = index_paths(local_dir, name)
    missing = [p for p in paths.all() if not p.is_file()]
    if missing:
        available = available_indices(local_dir)
        raise FileNotFoundError(
            f"no complete index {name!r} in {local_dir} (missing {', '.join(p.name for p in missing)}); "
            f"available: {', '.join(available) or 'none'}"
        )
    try:
        meta = json.loads(paths.meta.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise IndexFileError(paths.meta, name, f"meta file is not valid JSON ({exc})") from exc
    if not isinstance(meta, dict):
        raise IndexFileError(paths.meta, name, "meta file does not hold a JSON object")
    faiss = require_faiss()
    try:
        index = faiss.read_index(str(paths.index))
    except RuntimeError as exc:
        why = str(exc).strip().splitlines()[-1]
        raise IndexFileError(paths.index, name, f"faiss could not read it ({why})") from exc
    try:
        table = pq.read_table(paths.ids, columns=["row", "image_id"])
    except (pa.ArrowException, OSError, KeyError) as exc:
        raise IndexFileError(paths.ids, name, f"id map is unreadable ({exc})") from exc
    rows = table.column("row").to_numpy()
    ids = np.asarray(table.column("image_id").to_pylist(), dtype=object)
    if len(ids) != index.ntotal or not np.array_equal(rows, np.arange(len(ids))):
        raise IndexFileError(
            paths.ids,
            name,
            f"id map has {len(ids)} rows but the index holds {index.ntotal} vectors",
        )
    if meta.get("count") != index.ntotal or meta.get("dim") != index.d:
        raise IndexFileError(
            paths.meta,
            name,
            f"meta says count={meta.get('count')}, dim={meta.get('dim')} but the index holds "
            f"{index.ntotal} vectors of dim {index.d}",
        )
    return index, ids, meta


def available_indices(local_dir: str | os.PathLike[str]) -> list[str]:
    """Names of the indices in ``local_dir`` that have a meta file (sorted)."""
    root = Path(local_dir)
    if not root.is_dir():
        return []
    return sorted(p.name[: -len(".meta.json")] for p in root.glob("*.meta.json"))


def _atomic_write(path: Path, write: Any) -> None:
    """Call ``write(tmp)`` on a temporary sibling of ``path``, then rename it into place."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
