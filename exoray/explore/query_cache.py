"""Vectors of past search queries, kept in BASE so a repeated query needs no model at all.

Loading a real text/image encoder takes 10-25 s, far longer than a search; every ``exoray
search`` is a new process, so without this each repeated query would load it again.

``indices/query_cache/<model-id slug>.parquet`` holds one row per query: ``model_id``,
``kind`` (``text``, or ``image`` for a query file, keyed by the BLAKE2b-128 of its bytes),
``query`` (the exact text, or that hex digest), ``vector`` (float32, as the model returned it,
L2-normalised) and ``added`` (ns since the epoch). The file is named by, and filtered on, the
index's model id, so vectors of one model are never used with another. It keeps the newest
``MAX_QUERIES`` rows, sorted by query in small row groups, so a lookup reads a few kB even from
Drive. A miss rewrites the whole file (staged locally, published atomically); two processes
saving at the same instant may lose one entry, which only costs a model load later. An
unreadable or unwritable cache is never an error: search then simply runs the model.
"""

from __future__ import annotations

import logging
import time

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from exoray.storage import layout
from exoray.storage.staging import staging_file
from exoray.storage.store import Store

QUERY_CACHE = f"{layout.INDICES}/query_cache"
MAX_QUERIES = 10_000
ROW_GROUP_ROWS = 256
QUERY_KINDS = ("text", "image")

log = logging.getLogger(__name__)


def query_cache_path(model_id: str) -> str:
    """Path (relative to BASE) of ``model_id``'s query cache."""
    return f"{QUERY_CACHE}/{layout.slug(model_id)}.parquet"


class QueryCache:
    """Query vectors of one model id (``dim`` floats each) in BASE, plus an in-memory copy."""

    def __init__(self, store: Store, model_id: str, dim: int, *,
                 max_queries: int = MAX_QUERIES) -> None:
        if max_queries < 1:
            raise ValueError(f"max_queries must be >= 1, got {max_queries}")
        self.store, self.model_id, self.dim = store, model_id, int(dim)
        self.max_queries = max_queries
        self.path = query_cache_path(model_id)
        self._memory: dict[tuple[str, str], np.ndarray] = {}

    def get(self, kind: str, query: str) -> np.ndarray | None:
        """The saved vector of ``query``, or None (not saved, or the cache is unreadable)."""
        _check_kind(kind)
        if (kind, query) in self._memory:
            return self._memory[(kind, query)]
        try:
            if not self.store.exists(self.path):
                return None
            table = pq.read_table(
                self.store.path(self.path), filesystem=self.store.fs,
                columns=["vector"], filters=[("model_id", "=", self.model_id),
                                             ("kind", "=", kind), ("query", "=", query)])
        except (OSError, pa.ArrowException, ValueError) as exc:
            log.warning("query cache %s unreadable (%s); the model will encode the query",
                        self.store.uri(self.path), exc)
            return None
        vectors = [v for v in table["vector"].to_pylist() if v is not None]
        if not vectors or len(vectors[-1]) != self.dim:
            return None
        vector = np.asarray(vectors[-1], dtype=np.float32)
        if not np.all(np.isfinite(vector)):
            return None
        self._memory[(kind, query)] = vector
        return vector

    def put(self, kind: str, query: str, vector: np.ndarray) -> bool:
        """Save ``vector`` for ``query`` (newest ``max_queries`` kept); False if BASE refused."""
        _check_kind(kind)
        vector = np.asarray(vector, dtype=np.float32).reshape(-1)
        if len(vector) != self.dim:
            raise ValueError(f"query vector has dim {len(vector)}, the {self.model_id} index "
                             f"holds dim {self.dim}")
        self._memory[(kind, query)] = vector
        row = pa.table({
            "model_id": [self.model_id], "kind": [kind], "query": [query],
            "vector": pa.FixedSizeListArray.from_arrays(pa.array(vector, pa.float32()), self.dim),
            "added": pa.array([time.time_ns()], pa.int64())})
        try:
            old = self._read_all(row.schema)
            if old is not None:
                same = pc.and_(pc.equal(old["kind"], kind), pc.equal(old["query"], query))
                row = pa.concat_tables([old.filter(pc.invert(same)), row])
            if row.num_rows > self.max_queries:
                newest = pc.sort_indices(row, [("added", "descending")])[: self.max_queries]
                row = row.take(newest)
            row = row.take(pc.sort_indices(row, [("kind", "ascending"), ("query", "ascending")]))
            with staging_file(suffix=".parquet") as local:
                pq.write_table(row, local, row_group_size=ROW_GROUP_ROWS)
                self.store.publish_file(local, self.path)
        except (OSError, pa.ArrowException) as exc:
            log.warning("could not save the query vector to %s: %s", self.store.uri(self.path),
                        exc)
            return False
        return True

    def _read_all(self, schema: pa.Schema) -> pa.Table | None:
        """Every saved row of this model id, or None when there is no usable file."""
        if not self.store.exists(self.path):
            return None
        try:
            with self.store.open_input_file(self.path) as f:
                table = pq.read_table(f)
            table = table.select(schema.names).cast(schema)
        except (OSError, pa.ArrowException, KeyError, ValueError) as exc:
            log.warning("query cache %s unreadable (%s); starting it afresh",
                        self.store.uri(self.path), exc)
            return None
        return table.filter(pc.equal(table["model_id"], self.model_id))


def _check_kind(kind: str) -> None:
    if kind not in QUERY_KINDS:
        raise ValueError(f"query kind must be one of {QUERY_KINDS}, got {kind!r}")
