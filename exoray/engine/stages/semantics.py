"""Phase V stages: decode into a padded square (whole picture, aspect kept), then one task model.

Detectors and OCR must see the whole picture: a centre crop (what embeddings use) would cut
people and text off at the edges. Each image is scaled so its long side is the working size and
placed in the top-left of a gray square; ``image_size`` says which part is picture, so backends
return boxes normalised to the displayed image whatever the padding.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from exoray.engine.stages.embed import use_cpu_threads
from exoray.engine.stages.reading import PrefetchingReader, split_results
from exoray.image.decode import DEFAULT_MAX_PIXELS, decode_image
from exoray.storage.store import Store

PAD_VALUE = 114  # ultralytics' letterbox gray; neutral for OCR too


def padded_square(data: bytes, side: int, *, name: str, max_pixels: int
                  ) -> tuple[np.ndarray, tuple[int, int], tuple[int, int]]:
    """(side² RGB square, (w, h) of the picture inside it, (w, h) of the displayed image)."""
    import cv2

    decoded = decode_image(data, name=name, max_side=side, max_pixels=max_pixels)
    rgb = decoded.rgb
    h, w = rgb.shape[:2]
    scale = side / max(h, w)
    nw, nh = max(1, min(side, round(w * scale))), max(1, min(side, round(h * scale)))
    if (nw, nh) != (w, h):
        interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
        rgb = cv2.resize(rgb, (nw, nh), interpolation=interp)
    square = np.full((side, side, 3), PAD_VALUE, np.uint8)
    square[:nh, :nw] = rgb
    return square, (nw, nh), (decoded.width, decoded.height)


class PadDecodeWorker:
    """Manifest rows in; rows with a padded ``image`` square, ``image_size`` and the displayed
    ``width``/``height`` (or an error) out."""

    def __init__(self, image_root: str, side: int, max_pixels: int = DEFAULT_MAX_PIXELS,
                 io_threads: int | None = None) -> None:
        self.side = side
        self.max_pixels = max_pixels
        self.reader = PrefetchingReader(Store(image_root), io_threads)

    def _decode(self, data: bytes, name: str) -> Any:
        return padded_square(data, self.side, name=name, max_pixels=self.max_pixels)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        results = self.reader.map(list(batch["relpath"]), self._decode)
        errors, messages, ok = split_results(results)
        n = len(results)
        images = np.full((n, self.side, self.side, 3), PAD_VALUE, np.uint8)
        sizes = np.zeros((n, 2), np.int32)
        shown = np.zeros((n, 2), np.int32)
        for i, res in ok:
            images[i], sizes[i], shown[i] = res
        out = dict(batch)
        out.update(image=images, image_size=sizes, width=shown[:, 0], height=shown[:, 1],
                   error=errors, message=messages)
        return out


class TaskWorker:
    """One Phase V model as an actor: runs it on the rows that need it, adds lineage columns.

    The backend is a plain class (no Ray). Its per-image structs travel to the sink as JSON
    strings: Arrow cannot infer one type for empty and non-empty lists of dicts across batches,
    and the sink turns them into the task's typed schema.
    """

    def __init__(self, label: str, model: str, backend_kwargs: dict[str, Any],
                 model_options: dict[str, Any], store_location: str, run_id: str,
                 cpu_threads: int | None = None) -> None:
        from exoray.models import load_backend

        use_cpu_threads(cpu_threads)
        self.label = label
        self.backend = load_backend(model, **backend_kwargs, **model_options)
        self.column = self.backend.output_columns[0]
        self.store = Store(store_location)
        self.run_id = run_id
        self._events_seen = 0

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        need = batch[f"need_{self.label}"].astype(bool) & np.array(
            [not e for e in batch["error"]], dtype=bool)
        n = len(need)
        results = np.full(n, "[]", dtype=object)
        if need.any():
            out = self.backend({"image": batch["image"][need],
                                "image_size": batch["image_size"][need]})[self.column]
            results[need] = [json.dumps(items) for items in out]
        self._flush_events()
        out_batch = {k: v for k, v in batch.items() if k not in ("image", "image_size")}
        out_batch[f"{self.label}_result"] = results
        out_batch[f"{self.label}_model_id"] = np.array([self.backend.model_id] * n, dtype=object)
        out_batch[f"{self.label}_weights_hash"] = np.array([self.backend.weights_hash] * n,
                                                           dtype=object)
        return out_batch

    def _flush_events(self) -> None:
        from exoray.engine.events import forward_backend_events

        self._events_seen = forward_backend_events(self.store, self.run_id, self.backend,
                                                   self._events_seen, task=self.label)
