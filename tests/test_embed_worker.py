"""The embedding actor class runs without Ray; OOM backoff reaches the run log."""

from __future__ import annotations

import numpy as np
import torch

from exoray.engine.events import read_events
from exoray.engine.stages.embed import DecodeWorker, EmbedWorker
from exoray.models.clip import ClipBackend
from exoray.storage.store import Store


class OomAbove8(ClipBackend):
    """Tiny CLIP whose forward raises torch's real CUDA OOM for chunks above 8 images."""

    def _forward(self, images):
        if len(images) > 8:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (test: chunk > 8)")
        return super()._forward(images)


def test_oom_backoff_is_recorded_in_the_run_log(tmp_path, synth_set, monkeypatch):
    monkeypatch.setenv("EXORAY_MODELS_DIR", str(tmp_path / "models"))
    import exoray.models as models

    monkeypatch.setattr(models, "load_backend",
                        lambda name, **kw: OomAbove8(variant="tiny", **kw))
    root, truth = synth_set
    rels = sorted(r for r, t in truth["images"].items() if not t["corrupt"])[:20]
    decode = DecodeWorker(str(root), side=64)
    batch = decode({"relpath": np.array(rels, dtype=object),
                    "need_clip": np.ones(len(rels), bool)})
    assert all(e == "" for e in batch["error"])
    store = Store(str(tmp_path / "base"))
    worker = EmbedWorker("clip", {"cache_dir": str(tmp_path / "models"), "batch_size": 32},
                         store.location, run_id="run1")
    out = worker(batch)
    assert worker.backend.batch_size == 8
    reference = OomAbove8(variant="tiny", cache_dir=str(tmp_path / "models"), batch_size=4)
    expected = reference({"image": batch["image"]})["embedding"]
    assert np.allclose(out["clip_vector"], expected, atol=1e-5)
    events = read_events(store, "run1")
    assert [(e["event"], e["from"], e["to"]) for e in events] == [("oom_backoff", 32, 16),
                                                                   ("oom_backoff", 16, 8)]
