"""Phase VI stage: one vision-language model actor answers several prompts over one decode.

Each prompt of the run is a target (its own folder and done-set); a row carries a ``need_<label>``
flag per prompt, so one batch of decoded images is asked only the prompts it still lacks, each
with that prompt's own generation settings.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from exoray.engine.stages.embed import use_cpu_threads
from exoray.storage.store import Store


class InterpretWorker:
    """``prompts``: [(label, rendered prompt text, generation settings)] of the run."""

    def __init__(self, model: str, backend_kwargs: dict[str, Any],
                 prompts: list[tuple[str, str, dict[str, Any]]], store_location: str,
                 run_id: str, cpu_threads: int | None = None) -> None:
        from exoray.models import load_backend

        use_cpu_threads(cpu_threads)
        self.backend = load_backend(model, **backend_kwargs)
        self.prompts = prompts
        self.store = Store(store_location)
        self.run_id = run_id
        self._events_seen = 0

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        ok = np.array([not e for e in batch["error"]], dtype=bool)
        n = len(ok)
        out = {k: v for k, v in batch.items() if k not in ("image", "image_size")}
        for label, text, generation in self.prompts:
            need = batch[f"need_{label}"].astype(bool) & ok
            answers = np.full(n, "", dtype=object)
            if need.any():
                self.backend.set_generation(**generation)
                got = self.backend({"image": batch["image"][need],
                                    "image_size": batch["image_size"][need],
                                    "prompt": np.array([text] * int(need.sum()), dtype=object)})
                answers[need] = list(got["text"])
            out[f"{label}_text"] = answers
            out[f"{label}_model_id"] = np.array([self.backend.model_id] * n, dtype=object)
            out[f"{label}_weights_hash"] = np.array([self.backend.weights_hash] * n,
                                                    dtype=object)
        self._flush_events()
        return out

    def _flush_events(self) -> None:
        from exoray.engine.events import forward_backend_events

        self._events_seen = forward_backend_events(self.store, self.run_id, self.backend,
                                                   self._events_seen, task="interpret")
