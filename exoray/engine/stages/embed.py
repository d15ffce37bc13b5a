"""Phase III stages: decode once to a square crop, then embed it with every model of the run.

The decode step resizes each image's shorter side to the largest input any model of the run needs
and centre-crops a square; each model backend then resizes that square to its own resolution, which
is geometrically the same as its own resize-shorter-side + centre-crop. So an image is read and
decoded once for CLIP and DINO together.

Two shapes: ``--decode cpu`` decodes in CPU actors (:class:`DecodeWorker`) and runs one actor pool
per model (:class:`EmbedWorker`); ``--decode gpu`` only reads bytes and headers on the CPU
(:class:`ReadBytesWorker`) and one GPU actor (:class:`GpuEmbedWorker`) decodes the JPEG batch
with nvJPEG and runs every model on the squares without them leaving the GPU.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import pyarrow as pa

from exoray.engine.events import record_event
from exoray.engine.spec import Target
from exoray.engine.stages.reading import ItemError, PrefetchingReader, apply_decoder, split_results
from exoray.image.decode import DEFAULT_MAX_PIXELS
from exoray.image.gpu_decode import (
    DEFAULT_GPU_BATCH,
    GpuSquareDecoder,
    JpegHeader,
    inspect_jpeg,
    square_crop,
)
from exoray.storage.store import Store

__all__ = ["DecodeWorker", "EmbedWorker", "GpuEmbedWorker", "ReadBytesWorker", "square_crop"]


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
        errors, messages, ok = split_results(results)
        images = np.zeros((len(results), self.side, self.side, 3), np.uint8)
        for i, square in ok:
            images[i] = square
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
        out = dict(batch)
        out.update(model_columns(self.model, self.backend, batch, batch["image"]))
        self._events_seen = _flush_events(self.store, self.run_id, self.model, self.backend,
                                          self._events_seen)
        if self.drop_image:
            out.pop("image")
        return out


def model_columns(model: str, backend: Any, batch: dict[str, np.ndarray], images: Any
                  ) -> dict[str, np.ndarray]:
    """``<model>_vector`` / ``_model_id`` / ``_weights_hash`` for the rows that need ``model``
    and have no error; ``images`` is the batch's squares (numpy, or a tensor on the GPU)."""
    need = batch[f"need_{model}"].astype(bool) & np.array(
        [not e for e in batch["error"]], dtype=bool)
    n = len(need)
    vectors = np.zeros((n, backend.dim), np.float32)
    if need.any():
        if isinstance(images, np.ndarray):
            chosen = images[need]
        else:  # a torch tensor on the device: index there, nothing crosses to the host
            chosen = images[np.flatnonzero(need).tolist()]
        vectors[need] = backend({"image": chosen})["embedding"]
    return {f"{model}_vector": vectors,
            f"{model}_model_id": np.array([backend.model_id] * n, dtype=object),
            f"{model}_weights_hash": np.array([backend.weights_hash] * n, dtype=object)}


def _flush_events(store: Store, run_id: str, model: str, backend: Any, seen: int) -> int:
    from exoray.engine.events import forward_backend_events

    return forward_backend_events(store, run_id, backend, seen, model=model)


class ReadBytesWorker:
    """GPU-decode path, CPU side: manifest rows in; rows with the file's bytes, its decode route
    and EXIF orientation (from the header alone) out. No pixel is decoded here."""

    def __init__(self, image_root: str, max_pixels: int = DEFAULT_MAX_PIXELS,
                 io_threads: int | None = None) -> None:
        self.max_pixels = max_pixels
        self.reader = PrefetchingReader(Store(image_root), io_threads)

    def _header(self, data: bytes, name: str) -> tuple[bytes, JpegHeader]:
        return data, inspect_jpeg(data, max_pixels=self.max_pixels)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        results = self.reader.map(list(batch["relpath"]), self._header)
        errors, messages, ok = split_results(results)
        n = len(results)
        data = np.full(n, b"", dtype=object)
        route = np.full(n, "cpu", dtype=object)
        orientation = np.ones(n, np.int8)
        for i, (raw, header) in ok:
            data[i], route[i], orientation[i] = raw, header.route, header.orientation
        out = dict(batch)
        out.update(data=data, route=route, orientation=orientation, error=errors,
                   message=messages)
        return out


class GpuEmbedWorker:
    """GPU-decode path, GPU side: every model of the run in one actor, fed by nvJPEG.

    Decodes the batch's JPEGs on the device (:class:`~exoray.image.gpu_decode.GpuSquareDecoder`),
    falls back per image to the CPU path inside this actor, and embeds the squares with each
    model without copying them to the host. Files that fail both ways become error rows, as with
    ``--decode cpu``. The backends are plain classes; so is this worker (no Ray needed).
    """

    def __init__(self, models: dict[str, dict[str, Any]], side: int, store_location: str,
                 run_id: str, max_pixels: int = DEFAULT_MAX_PIXELS,
                 decode_batch: int = DEFAULT_GPU_BATCH, device: str | None = None) -> None:
        from exoray.models import load_backend

        self.backends = {m: load_backend(m, **{**kw, **({"device": device} if device else {})})
                         for m, kw in models.items()}
        self.device = next(iter(self.backends.values())).device
        self.decoder = GpuSquareDecoder(side, self.device, self._cpu_square,
                                        max_pixels=max_pixels, batch_size=decode_batch)
        self.side, self.max_pixels = side, max_pixels
        self.store = Store(store_location)
        self.run_id = run_id
        self._events_seen = dict.fromkeys(self.backends, 0)
        self._said_disabled = False

    def _cpu_square(self, data: bytes, name: str) -> np.ndarray | ItemError:
        return apply_decoder(data, name, lambda d, n: square_crop(
            d, self.side, name=n, max_pixels=self.max_pixels))

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        relpaths = list(batch["relpath"])
        datas = [ItemError(str(e), str(m)) if e else d
                 for d, e, m in zip(batch["data"], batch["error"], batch["message"], strict=True)]
        decoded = self.decoder(datas, relpaths, orientations=list(batch["orientation"]),
                               routes=list(batch["route"]))
        if self.decoder.disabled and not self._said_disabled:
            # Once per actor, in the run log: every JPEG now takes the CPU path, which is slower
            # (per-image GPU refusals are not logged: one small file each would crowd Drive).
            record_event(self.store, self.run_id,
                         next(e for e in self.decoder.events
                              if e["event"] == "gpu_decode_disabled"))
            self._said_disabled = True
        errors = np.array(batch["error"], dtype=object)
        messages = np.array(batch["message"], dtype=object)
        for i, err in enumerate(decoded.errors):
            if err is not None:
                errors[i], messages[i] = err.error, err.message
        out = {k: v for k, v in batch.items() if k not in ("data", "route", "orientation")}
        out.update(error=errors, message=messages)
        try:
            for model, backend in self.backends.items():
                out.update(model_columns(model, backend, out, decoded.images))
                self._events_seen[model] = _flush_events(self.store, self.run_id, model,
                                                         backend, self._events_seen[model])
        finally:
            del decoded
            if self.device.startswith("cuda"):
                import torch

                torch.cuda.empty_cache()
        return out


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
