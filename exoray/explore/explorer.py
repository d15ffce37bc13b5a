"""Navigation on top of the indices: search, cluster, sample, and thumbnail grids in notebooks."""

from __future__ import annotations

import hashlib
import os
from functools import cached_property
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from exoray.engine.done import present_images
from exoray.explore.query_cache import QueryCache
from exoray.image.decode import DEFAULT_MAX_PIXELS, DecodeError, decode_image
from exoray.image.manifest import manifest_root, read_manifest
from exoray.index.embeddings import read_current_embeddings, resolve_embeddings
from exoray.index.store import load_index, read_pointer
from exoray.storage import layout
from exoray.storage.staging import staging_file
from exoray.storage.store import Store

SAMPLE_METHODS = ("diverse", "random", "stratified")


class Explorer:
    """Search, cluster and sample one model's embeddings of a BASE; ``show`` renders images.

    Everything is loaded on first use and kept: the index, the manifest and, for text and
    image-file queries, the model (a ``cached_property``), so in a notebook only the first
    such query pays the 10-25 s model load. Query vectors are also saved in
    ``BASE/indices/query_cache/`` (see :mod:`exoray.explore.query_cache`), so a query asked
    before -- here or from any other process, such as ``exoray search`` -- loads no model.
    Search covers the indexed images; cluster and sample read the current embeddings. Both
    leave out deleted images and images changed since they were embedded.
    """

    def __init__(self, base: str | os.PathLike[str], model: str = "clip", *,
                 cache_queries: bool = True) -> None:
        self.store = Store(base)
        self.model = model
        self.cache_queries = cache_queries
        self.last_query_saved: str | None = None  # BASE path the last query vector went to

    # -- lazily loaded state ---------------------------------------------------------------
    @cached_property
    def index(self):
        """The family's published index; a clear error naming the command that builds it."""
        pointer = read_pointer(self.store, self.family)
        where, spec = self.store.location, self.model
        if pointer is None:
            try:
                resolve_embeddings(self.store, spec)
            except FileNotFoundError:
                raise FileNotFoundError(
                    f"no {spec} embeddings in {where} to search; run `exoray embed {where} "
                    f"--model {spec}`, then `exoray index {where} --model {spec}`") from None
            raise FileNotFoundError(f"no {self.family} index in {where}; run `exoray index "
                                    f"{where} --model {spec}` first")
        if ":" in spec:  # an explicit variant: the family's one index must hold that model
            wanted = resolve_embeddings(self.store, spec).model_id
            if pointer.get("model_id") != wanted:
                raise FileNotFoundError(
                    f"the {self.family} index in {where} holds {pointer.get('model_id')}, not "
                    f"{spec} ({wanted}); run `exoray index {where} --model {spec}` to index it")
        return load_index(self.store, self.family)

    @cached_property
    def query_cache(self) -> QueryCache | None:
        """Saved query vectors of the index's model id (None when caching is off)."""
        model_id = self.index.meta.get("model_id")
        if not self.cache_queries or not model_id:
            return None
        return QueryCache(self.store, str(model_id), self.index.dim)

    @cached_property
    def manifest(self) -> pa.Table:
        table = read_manifest(self.store)
        if table is None:
            raise FileNotFoundError(f"no manifest in {self.store.location}")
        return table

    @cached_property
    def relpaths(self) -> dict[str, str]:
        t = self.manifest
        return dict(zip(t["image_id"].to_pylist(), t["relpath"].to_pylist(), strict=True))

    @cached_property
    def backend(self):
        """The embedding model that made the index (for text and image-file queries)."""
        from exoray.models import load_backend
        from pipelines.embeddings import models_cache_dir

        record = self._index_record()
        kwargs = {k: record.get(k) for k in ("variant", "checkpoint")}
        return load_backend(self.family, cache_dir=models_cache_dir(self.store), **kwargs)

    @property
    def family(self) -> str:
        return self.model.split(":", 1)[0]

    def _index_record(self) -> dict[str, Any]:
        """model.json of the embeddings the index was built from (how to rebuild the model)."""
        from exoray.index.embeddings import MODEL_FILE

        folder = self.index.meta.get("folder")
        if not folder or not self.store.exists(folder, MODEL_FILE):
            raise FileNotFoundError(
                f"the {self.family} index in {self.store.location} predates model records; "
                f"rebuild it with `exoray index {self.store.location} --model {self.model} "
                "--rebuild`")
        import json

        return json.loads(self.store.read_bytes(folder, MODEL_FILE))

    @cached_property
    def current_ids(self) -> set[str]:
        """Indexed images that are still present with the file version that was embedded:
        search never returns a deleted or changed image, even from a stale index."""
        from exoray.engine.errors_table import image_keys
        from exoray.storage.parts import read_parts

        folder = self.index.meta.get("folder")
        images = present_images(self.manifest)
        if not folder:
            return set(images["image_id"].to_pylist())
        rows = read_parts(self.store, folder, ["image_id", "fingerprint"])
        keep = pc.is_in(image_keys(rows), value_set=image_keys(images))
        return set(rows.filter(keep)["image_id"].to_pylist())

    # -- search ----------------------------------------------------------------------------
    def query_vector(self, *, text: str | None = None, image: str | None = None,
                     image_id: str | None = None, vector: np.ndarray | None = None) -> np.ndarray:
        given = [x is not None for x in (text, image, image_id, vector)]
        if sum(given) != 1:
            raise ValueError("give exactly one query: text=, image= (a file), image_id= or vector=")
        if text is not None:
            from exoray.models import get_backend_class

            if not hasattr(get_backend_class(self.family), "encode_text"):  # no model load
                raise ValueError(f"text search needs a text encoder; {self.model!r} has none "
                                 "(use --model clip, or search by --image / --id)")
            return self._cached("text", text, lambda: self.backend.encode_text([text])[0])
        if image is not None:
            if not os.path.isfile(image):
                raise FileNotFoundError(f"query image {image!r} does not exist; pass an image file")
            with open(image, "rb") as f:
                data = f.read()
            digest = hashlib.blake2b(data, digest_size=16).hexdigest()
            return self._cached("image", digest, lambda: self._encode_image(data, image))
        if image_id is not None:
            return self.index.vector(image_id)
        v = np.asarray(vector, dtype=np.float32).reshape(-1)
        return v / max(float(np.linalg.norm(v)), 1e-12)

    def _encode_image(self, data: bytes, name: str) -> np.ndarray:
        from exoray.engine.stages.embed import square_crop

        square = square_crop(data, self.backend.input_size, name=name,
                             max_pixels=DEFAULT_MAX_PIXELS)
        return self.backend({"image": square[None]})["embedding"][0]

    def _cached(self, kind: str, query: str, encode: Any) -> np.ndarray:
        """The saved vector of ``query``, else ``encode()`` (loads the model once) and save."""
        self.last_query_saved = None
        cache = self.query_cache
        vector = cache.get(kind, query) if cache is not None else None
        if vector is None:
            vector = np.asarray(encode(), dtype=np.float32).reshape(-1)
            if cache is not None and len(vector) == cache.dim and cache.put(kind, query, vector):
                self.last_query_saved = cache.path
        return vector

    def search(self, text: str | None = None, *, image: str | None = None,
               image_id: str | None = None, vector: np.ndarray | None = None, k: int = 20
               ) -> list[dict[str, Any]]:
        """Top-``k`` images as dicts (rank, image_id, relpath, score), best first."""
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        if image_id is not None and image_id not in self.index:
            raise ValueError(self._not_indexed(image_id))
        q = None if image_id is not None else self.query_vector(text=text, image=image,
                                                                   vector=vector)
        valid, fetch = self.current_ids, k
        while True:
            fetch = min(fetch, len(self.index))
            raw = (self.index.search_by_id(image_id, fetch) if q is None
                   else self.index.search(q[None, :], fetch)[0])
            hits = [(i, s) for i, s in raw if i in valid][:k]
            if len(hits) >= k or fetch >= len(self.index):
                break
            fetch *= 4
        return [{"rank": r + 1, "image_id": i, "relpath": self.relpaths.get(i), "score": s}
                for r, (i, s) in enumerate(hits)]

    def _not_indexed(self, image_id: str) -> str:
        where = self.store.location
        if image_id not in self.relpaths:
            return (f"image_id {image_id!r} is not an image of {where}; use an id printed by "
                    f"`exoray search` or `exoray sample {where} --model {self.model}`")
        return (f"image_id {image_id!r} ({self.relpaths[image_id]}) is not in the "
                f"{self.family} index; if it was embedded after the index was built, run "
                f"`exoray index {where} --model {self.model}`")

    # -- cluster and sample ----------------------------------------------------------------
    def _embeddings(self, subset: str | None = None) -> tuple[list[str], np.ndarray]:
        """Current embeddings (present images, file unchanged since embedding), by image_id."""
        ids, vectors, _ = read_current_embeddings(self.store, self.model)
        if subset is not None:
            keep = self.subset_ids(subset)
            mask = np.array([i in keep for i in ids], dtype=bool)
            ids, vectors = [i for i, m in zip(ids, mask, strict=True) if m], vectors[mask]
        return ids, vectors

    def _no_embeddings(self, subset: str | None = None) -> ValueError:
        where = self.store.location
        fix = f"run `exoray embed {where} --model {self.model}` (embeds new and changed images)"
        if subset:
            return ValueError(f"no image of subset {subset!r} has current {self.model} "
                              f"embeddings; choose another --subset, or {fix}")
        return ValueError(f"no image in {where} has current {self.model} embeddings; {fix}")

    def cluster_path(self, k: int) -> str:
        """Where ``cluster(k)`` writes its assignment, relative to BASE."""
        return f"{layout.CLUSTERS}/{self.family}-k{k}.parquet"

    def subset_ids(self, subset: str) -> set[str]:
        """Images whose Phase IV flags match ``subset``: a flag name or an expression such as
        ``"photo and not dark"`` (see ``exoray subsets`` for the flags)."""
        from exoray.engine.subsets import subset_mask

        table = present_images(self.manifest)
        return set(table.filter(subset_mask(self.store, subset, table))["image_id"].to_pylist())

    def cluster(self, k: int = 100, *, seed: int = 0, niter: int = 20) -> list[dict[str, Any]]:
        """Spherical k-means; writes indices/clusters/<model>-k<k>.parquet, returns per cluster
        size and medoid image."""
        from exoray.index import spherical_kmeans

        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(f"number of clusters k must be a positive integer, got {k!r}")
        ids, vectors = self._embeddings()
        if not ids:
            raise self._no_embeddings()
        if k > len(ids):
            raise ValueError(f"k={k} clusters is more than the {len(ids)} images with current "
                             f"{self.model} embeddings; choose k <= {len(ids)}")
        result = spherical_kmeans(vectors, int(k), seed=seed, niter=niter)
        table = pa.table({"image_id": ids, "cluster": pa.array(result.assign, pa.int32()),
                          "distance": pa.array(result.distance, pa.float32())})
        with staging_file(suffix=".parquet") as local:
            pq.write_table(table, local)
            self.store.publish_file(local, self.cluster_path(int(k)))
        return [{"cluster": int(c), "size": int(result.sizes[c]),
                 "medoid": ids[int(result.medoids[c])] if result.medoids[c] >= 0 else None,
                 "members": [ids[int(r)] for r in result.members(int(c))[:12]]}
                for c in np.argsort(-result.sizes, kind="stable")]

    def sample(self, n: int, *, method: str = "diverse", subset: str | None = None,
               seed: int = 0) -> list[str]:
        """``n`` image ids: ``diverse`` (k-center greedy), ``random`` or ``stratified``
        (proportional per cluster); deterministic for a seed. ``n`` larger than the number of
        images with current embeddings returns all of them (``exoray sample`` says so)."""
        from exoray.index import cluster_stratified_sample, kcenter_greedy, random_sample

        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"sample size n must be a positive integer, got {n!r}")
        if method not in SAMPLE_METHODS:
            raise ValueError(f"unknown sample method {method!r}; choose one of {SAMPLE_METHODS}")
        ids, vectors = self._embeddings(subset)
        if not ids:
            raise self._no_embeddings(subset)
        if method == "random":
            rows = random_sample(len(ids), n, seed)
        elif method == "diverse":
            rows = kcenter_greedy(vectors, n, seed=seed)
        else:
            rows = cluster_stratified_sample(vectors, n, seed=seed)
        return [ids[int(r)] for r in rows]

    # -- display ---------------------------------------------------------------------------
    def thumbnails(self, ids: list[str], *, size: int = 160, ncols: int = 6):
        """A PIL image grid of ``ids`` (unreadable files become grey tiles)."""
        return thumbnail_grid(self.store, ids, size=size, ncols=ncols)

    def show(self, ids_or_results: list[Any], *, size: int = 160, ncols: int = 6):
        """Render a thumbnail grid (in a notebook it displays inline) and return it."""
        ids = [r["image_id"] if isinstance(r, dict) else r for r in ids_or_results]
        grid = self.thumbnails(ids, size=size, ncols=ncols)
        try:
            from IPython.display import display
        except ImportError:
            return grid
        display(grid)
        return grid


def thumbnail_grid(store: Store, ids: list[str], *, size: int = 160, ncols: int = 6):
    from PIL import Image

    root = Store(manifest_root(store) or store.uri(layout.DEFAULT_IMAGES))
    manifest = read_manifest(store)
    relpaths = dict(zip(manifest["image_id"].to_pylist(), manifest["relpath"].to_pylist(),
                        strict=True)) if manifest is not None else {}
    ncols = max(1, min(ncols, len(ids) or 1))
    nrows = max(1, -(-len(ids) // ncols))
    grid = Image.new("RGB", (ncols * size, nrows * size), (255, 255, 255))
    for i, image_id in enumerate(ids):
        tile = Image.new("RGB", (size, size), (200, 200, 200))
        rel = relpaths.get(image_id)
        if rel is not None:
            try:
                rgb = decode_image(root.read_bytes(rel), name=rel, max_side=size).rgb
                thumb = Image.fromarray(rgb)
                tile.paste(thumb, ((size - thumb.width) // 2, (size - thumb.height) // 2))
            except (OSError, DecodeError):
                tile.paste((230, 200, 200), (0, 0, size, size))  # unreadable now: a pink tile
        grid.paste(tile, ((i % ncols) * size, (i // ncols) * size))
    return grid
