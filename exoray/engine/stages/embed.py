"""Phase III stages: decode once to a square crop, then one actor pool per embedding model.

The decode stage resizes each image's shorter side to the largest input any model of the run needs
and centre-crops a square; each model backend then resizes that square to its own resolution, which
is geometrically the same as its own resize-shorter-side + centre-crop. So an image is read and
decoded once for CLIP and DINO together.
"""

from __future__ import annotations

import math
import os
from typing import Any

import numpy as np
import pyarrow as pa

from exoray.engine.schemas import NO_ERROR
from exoray.engine.spec import Target
from exoray.engine.stages.reading import ItemError, PrefetchingReader
from exoray.image.decode import DEFAULT_MAX_PIXELS, decode_image, read_image_size
from exoray.storage.store import Store


def square_crop(data: bytes, side: int, *, name: str, max_pixels: int) -> np.ndarray:
    """Decode ``data`` so its shorter side is ``side`` and centre-crop a ``side``² RGB square."""
    import cv2

    w, h = read_image_size(data, name=name)
    long_needed = math.ceil(side * max(w, h) / max(1, min(w, h)))
    rgb = decode_image(data, name=name, max_side=long_needed, max_pixels=max_pixels).rgb
    hh, ww = rgb.shape[:2]
    scale = side / min(hh, ww)
    nw, nh = max(side, round(ww * scale)), max(side, round(hh * scale))
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC
    resized = cv2.resize(rgb, (nw, nh), interpolation=interp)
    top, left = (nh - side) // 2, (nw - side) // 2
    return np.ascontiguousarray(resized[top:top + side, left:left + side])


class DecodeWorker:
    """Manifest rows in; rows with a uint8 ``image`` square (or an error) out."""

    def __init__(self, image_root: str, side: int, max_pixels: int = DEFAULT_MAX_PIXELS,
                 io_threads: int | None = None) -> None:
        self.side = side
        self.max_pixels = max_pixels
        self.reader = PrefetchingReader(Store(image_root), io_threads)

    def _crop(self, data: bytes, name: str) -> np.ndarray:
        return square_crop(data, self.side, name=name, max_pixels=self.max_pixels)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        results = self.reader.map(list(batch["relpath"]), self._crop)
        n = len(results)
        images = np.zeros((n, self.side, self.side, 3), np.uint8)
        errors = np.full(n, NO_ERROR, dtype=object)
        messages = np.full(n, "", dtype=object)
        for i, res in enumerate(results):
            if isinstance(res, ItemError):
                errors[i], messages[i] = res.error, res.message
            else:
                images[i] = res
        out = dict(batch)
        out.update(image=images, error=errors, message=messages)
        return out


def use_cpu_threads(threads: int | None = None) -> None:
    """Let torch use every core for CPU inference inside a Ray actor.

    Ray sets OMP_NUM_THREADS to an actor's (fractional, rounded up to 1) CPU share, which leaves a
    CPU-only model on one thread while the reservation is kept small only so reads and writes fit.
    ``EXORAY_TORCH_THREADS`` overrides the count.
    """
    import torch

    if torch.cuda.is_available():
        return
    wanted = int(os.environ.get("EXORAY_TORCH_THREADS", "0")) or threads or (os.cpu_count() or 1)
    torch.set_num_threads(wanted)


class EmbedWorker:
    """One embedding model as an actor: embeds rows that still need this model.

    The backend is a plain class (no Ray); this wrapper only selects rows, adds lineage columns
    and forwards the backend's batch-size backoff events to the run log.
    """

    def __init__(self, model: str, backend_kwargs: dict[str, Any], store_location: str,
                 run_id: str, drop_image: bool = False, cpu_threads: int | None = None) -> None:
        from exoray.models import load_backend

        use_cpu_threads(cpu_threads)
        self.model = model
        self.backend = load_backend(model, **backend_kwargs)
        self.store = Store(store_location)
        self.run_id = run_id
        self.drop_image = drop_image
        self._events_seen = 0

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        need = batch[f"need_{self.model}"].astype(bool) & np.array(
            [not e for e in batch["error"]], dtype=bool)
        n = len(need)
        vectors = np.zeros((n, self.backend.dim), np.float32)
        if need.any():
            vectors[need] = self.backend({"image": batch["image"][need]})["embedding"]
        self._flush_events()
        out = dict(batch)
        if self.drop_image:
            out.pop("image")
        out[f"{self.model}_vector"] = vectors
        out[f"{self.model}_model_id"] = np.array([self.backend.model_id] * n, dtype=object)
        out[f"{self.model}_weights_hash"] = np.array([self.backend.weights_hash] * n, dtype=object)
        return out

    def _flush_events(self) -> None:
        from exoray.engine.events import forward_backend_events

        self._events_seen = forward_backend_events(self.store, self.run_id, self.backend,
                                                   self._events_seen, model=self.model)


def _column_numpy(table: pa.Table, name: str) -> np.ndarray:
    col = table[name].combine_chunks()
    if hasattr(col, "to_numpy_ndarray"):
        return col.to_numpy_ndarray()
    return np.stack(col.to_numpy(zero_copy_only=False))


def vector_array(vectors: np.ndarray) -> pa.FixedSizeListArray:
    """float16 fixed-size-list column: unit vectors lose < 1e-3 cosine, storage halves."""
    vectors = np.ascontiguousarray(vectors, dtype=np.float16)
    flat = pa.array(vectors.reshape(-1), pa.float16())
    return pa.FixedSizeListArray.from_arrays(flat, vectors.shape[1])


def embedding_rows(rows: pa.Table, target: Target) -> pa.Table:
    """Sink conversion for one model's target: ``<model>_vector`` etc. → the embeddings schema."""
    m = target.label
    vectors = _column_numpy(rows, f"{m}_vector")
    return pa.table({
        "image_id": rows["image_id"],
        "fingerprint": rows["fingerprint"],
        "model_id": rows[f"{m}_model_id"],
        "weights_hash": rows[f"{m}_weights_hash"],
        "dim": pa.array([vectors.shape[1]] * rows.num_rows, pa.int32()),
        "vector": vector_array(vectors),
        "run_id": rows["run_id"],
    })
