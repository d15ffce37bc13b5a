"""``exoray demo``: a generated image set through every phase that exists, on any machine.

Uses the tiny random-initialised CLIP and DINO variants (built locally, loaded through the real
checkpoint code), so it needs no download; swap in real models with ``exoray embed --model clip``.
"""

from __future__ import annotations

import os

from exoray.storage import layout
from exoray.storage.store import Store

DEMO_MODELS = ("clip:tiny", "dino:tiny")


def run_demo(base: str, *, n: int = 200, seed: int = 0, show_progress: bool = True) -> None:
    from exoray.dev.synth import make_image_set
    from exoray.engine.status import collect_status, format_status
    from exoray.explore.explorer import Explorer
    from pipelines import dupes, embeddings, features, indices, manifest

    store = Store(base)
    images = store.local_path(layout.DEFAULT_IMAGES)
    if images is None:
        raise ValueError("the demo writes its images to a local folder; give a local BASE path")
    if not os.path.exists(os.path.join(images, "truth.json")):
        truth = make_image_set(images, n=n, seed=seed, corrupt=True, max_megapixels=1.5)
        print(f"[demo] wrote {len(truth['images'])} synthetic images to {images}")
    print("[demo] I manifest:", manifest.run(base, images=images))
    print("[demo] II features:", features.run(base, part_rows=100, show_progress=show_progress))
    summary = dupes.run(base)
    print("[demo] duplicates:", dupes.format_summary(summary))
    print("[demo] III embeddings:", embeddings.run(base, DEMO_MODELS, part_rows=100,
                                                   show_progress=show_progress))
    for built in indices.run(base, ["clip", "dino"]):
        print(f"[demo] VII index {built['model']}: {built['kind']} of {built['count']}")
    ex = Explorer(base, "clip")
    hits = ex.search("a photo with text", k=5)
    print("[demo] text search 'a photo with text' (tiny random model, so arbitrary):")
    for h in hits:
        print(f"         {h['score']:.3f} {h['relpath']}")
    first = hits[0]["image_id"]
    same = Explorer(base, "dino").search(image_id=first, k=3)
    print(f"[demo] nearest to {hits[0]['relpath']} by dino: {[h['relpath'] for h in same]}")
    clusters = ex.cluster(8)
    print(f"[demo] 8 clusters, sizes {[c['size'] for c in clusters]}")
    print(f"[demo] diverse sample of 6: {ex.sample(6)}")
    print(format_status(collect_status(base)))
