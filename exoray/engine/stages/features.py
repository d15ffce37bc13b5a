"""Phase II stage: read + decode + cheap features for a batch of manifest rows."""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from exoray import __version__
from exoray.engine.schemas import FEATURES_SCHEMA, NO_ERROR
from exoray.engine.stages.reading import ItemError, PrefetchingReader
from exoray.image.cheap_features import compute_features
from exoray.image.decode import DEFAULT_MAX_PIXELS
from exoray.storage.store import Store

STAGE_SCHEMA = pa.schema(list(FEATURES_SCHEMA) + [("error", pa.string()), ("message", pa.string())])


class FeatureWorker:
    """Callable class for ``map_batches``: manifest rows in, feature-or-error rows out."""

    def __init__(self, image_root: str, run_id: str, max_pixels: int = DEFAULT_MAX_PIXELS,
                 io_threads: int | None = None) -> None:
        self.run_id = run_id
        self.max_pixels = max_pixels
        self.reader = PrefetchingReader(Store(image_root), io_threads)

    def _features(self, data: bytes, name: str) -> dict[str, Any]:
        return compute_features(data, name=name, max_pixels=self.max_pixels)

    def __call__(self, batch: pa.Table) -> pa.Table:
        relpaths = batch["relpath"].to_pylist()
        results = self.reader.map(relpaths, self._features)
        rows = []
        for iid, rel, fp, res in zip(batch["image_id"].to_pylist(), relpaths,
                                     batch["fingerprint"].to_pylist(), results, strict=True):
            row: dict[str, Any] = {"image_id": iid, "relpath": rel, "fingerprint": fp,
                                   "run_id": self.run_id, "exoray_version": __version__,
                                   "error": NO_ERROR, "message": ""}
            if isinstance(res, ItemError):
                row["error"], row["message"] = res.error, res.message
            else:
                row.update(res)
            rows.append(row)
        return pa.Table.from_pylist(rows, schema=STAGE_SCHEMA)
