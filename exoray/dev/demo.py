"""``exoray demo``: a generated image set through every phase that exists, on any machine.

Runs every registered phase spec in order (tiny random-initialised CLIP and DINO, built locally
and loaded through the real checkpoint code, so nothing is downloaded), then the indices,
navigation, the 2-D map and the static HTML report; swap in real models with
``exoray embed --model clip``.
"""

from __future__ import annotations

import os
from typing import Any

from exoray.storage import layout
from exoray.storage.store import Store

DEMO_MODELS = ("clip:tiny", "dino:tiny")
# Per-phase options for the demo; a phase not listed runs with its defaults.
DEMO_OPTIONS: dict[str, dict[str, Any]] = {
    "embed": {"models": list(DEMO_MODELS)},
    # Phase V on subsets, as a user would: a random tiny YOLO (plumbing only) on the photos,
    # real PP-OCR weights (shipped in rapidocr's wheel) on what stratify calls text-heavy.
    "detect": {"model": "yolo:tiny", "subset": "human_present"},
    "ocr": {"model": "rapidocr", "subset": "text_heavy and not low_resolution"},
    # Tiny random SAM and Depth Anything: the plumbing, on the few images worth the cost.
    "depth": {"model": "depth:tiny", "subset": "high_quality or dense_scene"},
    "sam": {"model": "sam:tiny", "subset": "high_quality", "points_per_side": 8},
    # Phase VI: starter prompts of the registry (created in BASE/prompts/) with a tiny random VLM.
    "interpret": {"prompts": ["caption_short", "count_people"], "model": "vlm:tiny",
                  "subset": "high_quality"},
}


def run_demo(base: str, *, n: int = 200, seed: int = 0, show_progress: bool = True) -> None:
    from exoray.dev.synth import make_image_set
    from exoray.engine.registry import get_phase, phase_specs
    from exoray.engine.runner import run_phase
    from exoray.engine.status import collect_status, format_status
    from exoray.explore import Explorer
    from pipelines import dupes, indices, manifest

    store = Store(base)
    images = store.local_path(layout.DEFAULT_IMAGES)
    if images is None:
        raise ValueError("the demo writes its images to a local folder; give a local BASE path")
    if not os.path.exists(os.path.join(images, "truth.json")):
        truth = make_image_set(images, n=n, seed=seed, corrupt=True, max_megapixels=1.5)
        print(f"[demo] wrote {len(truth['images'])} synthetic images to {images}")
    print("[demo] I manifest:", manifest.run(base, images=images))
    from exoray.strata.rules import load_rules

    evidence_tasks = set(load_rules().evidence_tables())
    for spec in phase_specs():
        try:
            result = run_phase(spec, base, part_rows=100, show_progress=show_progress,
                               **DEMO_OPTIONS.get(spec.name, {}))
        except ImportError as exc:  # an optional extra (detect, ocr) is not installed
            print(f"[demo] {spec.title} skipped: {str(exc).splitlines()[0]}")
            continue
        print(f"[demo] {spec.title}: {result}")
        if spec.name in evidence_tasks:  # new Phase V evidence: flags made without it redone
            again = run_phase(get_phase("stratify"), base, show_progress=show_progress)
            print(f"[demo] IV flags with the new {spec.name} evidence: {again}")
        if spec.name == "features":
            print("[demo] duplicates:", dupes.format_summary(dupes.run(base)))
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
    from exoray.embedmap import build_map
    from exoray.report import build_report

    built_map = build_map(base, "clip")
    print(f"[demo] 2-D map of clip: {built_map['method_used']} map of {built_map['count']} "
          f"points ({built_map['status']})")
    report = build_report(base)
    print(f"[demo] report: {report}")
    print(format_status(collect_status(base)))
    print("[demo] try next:\n"
          f"  open {report.index} in a browser (no server needed)\n"
          f"  exoray search {base} --model dino --id {first} -k 5\n"
          f"  exoray sample {base} --model clip --n 12 --method diverse\n"
          f"  exoray errors {base}\n"
          f"  exoray doctor {base}")
