"""``VectorIndex``: a faiss index plus its row -> image_id map and metadata, searched by id.

Callers think in image ids, faiss in rows; this class is the one place that translates, so
nobody else handles -1 padding or row arithmetic.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

import numpy as np

from exoray.index._faiss import require_faiss
from exoray.index.faiss_index import (
    IndexPaths,
    add_to_index,
    build_index,
    index_kind,
    load_index_dir,
    save_index_dir,
    search_index,
)
from exoray.index.ids import as_id_array, check_unique_ids
from exoray.index.vectors import as_matrix, l2_normalize

if TYPE_CHECKING:
    import faiss

Hit = tuple[str, float]
"""(image_id, cosine score), best first."""


class VectorIndex:
    """A searchable, growable, saveable index of image embeddings keyed by image_id."""

    def __init__(
        self,
        index: faiss.Index,
        image_ids: list[str] | np.ndarray,
        meta: dict[str, Any] | None = None,
    ) -> None:
        ids = as_id_array(image_ids)
        if len(ids) != index.ntotal:
            raise ValueError(
                f"{len(ids)} image_ids given for an index of {index.ntotal} vectors; they must match"
            )
        check_unique_ids(ids)
        self.index = index
        self.ids = ids
        self.meta: dict[str, Any] = dict(meta or {})
        self.meta.update(kind=index_kind(index), dim=int(index.d), count=int(index.ntotal))
        self._rows: dict[str, int] | None = None

    # ----------------------------------------------------------------- construction / files

    @classmethod
    def build(
        cls,
        vectors: np.ndarray,
        image_ids: list[str] | np.ndarray,
        meta: dict[str, Any] | None = None,
        *,
        kind: str = "auto",
        seed: int = 0,
    ) -> VectorIndex:
        """Build an index of ``kind`` over ``vectors`` whose row i is ``image_ids[i]``."""
        ids = as_id_array(image_ids)
        if len(ids) != len(vectors):
            raise ValueError(
                f"{len(ids)} image_ids given for {len(vectors)} vectors; they must match"
            )
        return cls(build_index(vectors, kind, seed=seed), ids, meta)

    @classmethod
    def load(cls, local_dir: str | os.PathLike[str], name: str) -> VectorIndex:
        """Load index ``name`` saved by ``save`` / ``save_index_dir`` from ``local_dir``."""
        index, ids, meta = load_index_dir(local_dir, name)
        return cls(index, ids, meta)

    def save(self, local_dir: str | os.PathLike[str], name: str | None = None) -> IndexPaths:
        """Write the three index files into ``local_dir`` (see ``save_index_dir``)."""
        return save_index_dir(local_dir, self.index, self.ids, self.meta, name=name)

    # ----------------------------------------------------------------- queries

    def __len__(self) -> int:
        return int(self.index.ntotal)

    def __contains__(self, image_id: object) -> bool:
        return image_id in self._row_map()

    @property
    def kind(self) -> str:
        return str(self.meta["kind"])

    @property
    def dim(self) -> int:
        return int(self.index.d)

    def search(self, vectors: np.ndarray, k: int) -> list[list[Hit]]:
        """For each query row, up to ``k`` ``(image_id, score)`` pairs, best first.

        A 1-D vector is one query (the result is still a list of one list). Fewer than ``k``
        hits come back only when the index holds fewer reachable vectors.
        """
        scores, rows = search_index(self.index, vectors, k)
        return [self._hits(s, r) for s, r in zip(scores, rows, strict=True)]

    def search_by_id(self, image_id: str, k: int, *, vector: np.ndarray | None = None) -> list[Hit]:
        """The ``k`` images most similar to ``image_id``, excluding ``image_id`` itself.

        The query is the stored vector, reconstructed from the index (exact for flat and
        hnsw, the 8-bit re-rank copy for ivfpq; a bare IVF index gets a direct map on first
        use). Pass ``vector`` -- e.g. read from the embedding parts -- to skip reconstruction.
        """
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(f"k must be a positive integer; got {k!r}")
        if vector is None:
            query = self.vector(image_id)
        else:
            self.row_of(image_id)  # an unknown id is an error either way
            query = vector
        scores, rows = search_index(self.index, query, int(k) + 1)
        hits = [hit for hit in self._hits(scores[0], rows[0]) if hit[0] != image_id]
        return hits[:k]

    def vector(self, image_id: str) -> np.ndarray:
        """The stored vector of ``image_id``, re-normalised (quantised kinds drift off norm 1)."""
        return l2_normalize(self._reconstruct(self.row_of(image_id)))

    def _reconstruct(self, row: int) -> np.ndarray:
        try:
            return self.index.reconstruct(row)
        except RuntimeError as first:
            faiss = require_faiss()
            try:
                ivf = faiss.extract_index_ivf(self.index)
            except RuntimeError:
                ivf = None
            if ivf is None or ivf.direct_map.type != faiss.DirectMap.NoMap:
                raise ValueError(
                    f"index kind {self.kind!r} cannot reconstruct vectors; pass vector= to "
                    f"search_by_id ({first})"
                ) from first
            ivf.make_direct_map(True)
            return self.index.reconstruct(row)

    def row_of(self, image_id: str) -> int:
        """The faiss row of ``image_id``; KeyError when it is not indexed."""
        rows = self._row_map()
        if image_id not in rows:
            sample = ", ".join(repr(i) for i in self.ids[:3])
            raise KeyError(
                f"image_id {image_id!r} is not in this index ({len(self)} images, e.g. {sample})"
            )
        return rows[image_id]

    # ----------------------------------------------------------------- growth

    def add(
        self,
        vectors: np.ndarray,
        image_ids: list[str] | np.ndarray,
        *,
        parts: list[str] | None = None,
    ) -> None:
        """Append ``vectors`` as new images ``image_ids``; ``parts`` extends ``meta['parts']``.

        Ids already in the index are rejected: re-embedding an image means a rebuild, since
        faiss rows cannot be replaced in place for every kind.
        """
        ids = as_id_array(image_ids)
        x = as_matrix(vectors, dim=self.dim)
        if len(ids) != len(x):
            raise ValueError(f"{len(ids)} image_ids given for {len(x)} vectors; they must match")
        rows = self._row_map()
        check_unique_ids(ids, rows)
        start = len(self)
        add_to_index(self.index, x)
        self.ids = np.concatenate([self.ids, ids])
        rows.update((image_id, start + i) for i, image_id in enumerate(ids))
        self.meta["count"] = int(self.index.ntotal)
        if parts:
            self.meta["parts"] = list(self.meta.get("parts", [])) + list(parts)

    # ----------------------------------------------------------------- helpers

    def _row_map(self) -> dict[str, int]:
        if self._rows is None:
            self._rows = {image_id: row for row, image_id in enumerate(self.ids)}
        return self._rows

    def _hits(self, scores: np.ndarray, rows: np.ndarray) -> list[Hit]:
        return [(self.ids[r], float(s)) for s, r in zip(scores, rows, strict=True) if r >= 0]

    def __repr__(self) -> str:
        model = self.meta.get("model_id", "?")
        return f"VectorIndex(kind={self.kind!r}, model_id={model!r}, count={len(self)}, dim={self.dim})"
