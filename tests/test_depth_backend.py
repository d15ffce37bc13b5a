"""The depth backend (Depth Anything V2 through transformers), offline.

No real weights can be downloaded here, so the model is the seeded `tiny` DepthAnything (random
weights) saved with save_pretrained and loaded through the real checkpoint code. Random weights
say nothing about depth: these tests check plumbing, geometry (the crop of the padded square) and
the output contract, never that near things come out near.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from skimage import data

from exoray.models.depth import (
    DEPTH_VARIANTS,
    TINY_MODEL_ID,
    DepthBackend,
    build_tiny_depth,
    check_map_size,
    depth_map,
)

REPO_ROOT = Path(__file__).resolve().parents[1]
STATS = ("min", "max", "mean", "p05", "p50", "p95", "near_far_ratio")
KEYS = {*STATS, "map", "map_size"}


def _env(root: Path) -> dict[str, str]:
    return {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_HOME": str(root / "hf"),
            "EXORAY_MODELS_DIR": str(root / "models"),
            "EXORAY_LOCAL_MODELS_DIR": str(root / "local-models")}


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory):
    path = tmp_path_factory.mktemp("depth")
    with pytest.MonkeyPatch.context() as mp:
        for key, value in _env(path).items():
            mp.setenv(key, value)
        yield path


@pytest.fixture(scope="module")
def tiny(root: Path) -> DepthBackend:
    return DepthBackend("tiny", cache_dir=root / "cache", device="cpu")


def _picture(img: np.ndarray, w: int, h: int) -> np.ndarray:
    return np.asarray(Image.fromarray(img).resize((w, h), Image.BICUBIC))


def _padded(pictures: list[np.ndarray], side: int) -> dict[str, np.ndarray]:
    """Pictures top-left in gray squares, as the pipeline's decode stage delivers them."""
    squares = np.full((len(pictures), side, side, 3), 114, np.uint8)
    for square, pic in zip(squares, pictures, strict=True):
        square[: pic.shape[0], : pic.shape[1]] = pic
    return {"image": squares, "image_size": np.array([[p.shape[1], p.shape[0]] for p in pictures])}


def _photos() -> list[np.ndarray]:
    """Landscape, portrait and square pictures from real photos, at most 112 px (tiny's size)."""
    return [_picture(data.coffee(), 112, 75), _picture(data.astronaut()[:, 100:400], 56, 112),
            _picture(data.chelsea(), 90, 90)]


def test_checkpoint_dir_loads_like_the_tiny_variant(tiny: DepthBackend, root: Path,
                                                    tmp_path: Path) -> None:
    ckpt = Path(build_tiny_depth(tmp_path / "ckpt"))
    assert {"config.json", "model.safetensors", "preprocessor_config.json"} <= {
        p.name for p in ckpt.iterdir()}
    loaded = DepthBackend(checkpoint=ckpt, cache_dir=tmp_path / "cache", device="cpu")
    assert loaded.model_id == f"local:{ckpt.absolute()}" and tiny.model_id == TINY_MODEL_ID
    assert "random" in tiny.model_id
    assert loaded.weights_hash == tiny.weights_hash and len(tiny.weights_hash) == 16
    assert loaded.input_size == tiny.input_size == 112
    batch = _padded(_photos(), 128)
    a, b = loaded(batch)["depth"], tiny(batch)["depth"]
    assert [x[0]["map"] for x in a] == [x[0]["map"] for x in b]
    info = DepthBackend.describe(checkpoint=str(ckpt), cache_dir=tmp_path / "cache")
    assert (info["model_id"], info["input_size"]) == (loaded.model_id, loaded.input_size)


def test_one_struct_per_image_with_consistent_statistics(tiny: DepthBackend) -> None:
    pictures = _photos()
    column = tiny(_padded(pictures, 128))["depth"]
    assert column.dtype == object and column.shape == (3,)
    for pic, item in zip(pictures, column, strict=True):
        assert isinstance(item, list) and len(item) == 1 and set(item[0]) == KEYS
        out = item[0]
        assert all(type(out[k]) is float and np.isfinite(out[k]) for k in STATS)
        h, w = out["map_size"]
        assert all(type(v) is int for v in out["map_size"]) and max(h, w) == 64
        assert abs(w / h - pic.shape[1] / pic.shape[0]) < 0.05  # the picture's aspect
        assert len(out["map"]) == h * w and all(type(v) is float for v in out["map"])
        assert out["min"] <= out["p05"] <= out["p50"] <= out["p95"] <= out["max"]
        assert out["min"] <= out["mean"] <= out["max"] and 0 <= out["near_far_ratio"] <= 1
        arr = depth_map(out)
        assert arr.shape == (h, w) and arr.dtype == np.float32
        assert out["min"] - 1e-4 <= arr.min() <= arr.max() <= out["max"] + 1e-4
        assert arr.std() > 0, "the tiny model's map must vary with the picture"
        np.testing.assert_array_equal(depth_map({"depth": item}), arr)
    assert len({c[0]["mean"] for c in column}) == 3, "different pictures, different maps"


def test_padded_and_unpadded_picture_give_the_same_depth(tiny: DepthBackend) -> None:
    """The crop: a picture alone equals the same picture top-left in any larger gray square, and
    pictures of mixed shapes in one chunk (grouped by shape) equal each one alone."""
    pictures = _photos()
    padded = tiny(_padded(pictures, 160))["depth"]
    for pic, item in zip(pictures, padded, strict=True):
        alone = tiny({"image": pic[None]})["depth"][0][0]
        for key in STATS:
            assert item[0][key] == pytest.approx(alone[key], rel=1e-3, abs=1e-6), key
        assert item[0]["map_size"] == alone["map_size"]
        np.testing.assert_allclose(item[0]["map"], alone["map"], rtol=1e-3, atol=1e-5)
    blind = tiny({"image": _padded(pictures[:1], 160)["image"]})["depth"][0][0]
    assert blind["map_size"] == [64, 64] != padded[0][0]["map_size"]  # no image_size: the square


def test_map_size_option_and_bad_inputs(root: Path, tiny: DepthBackend) -> None:
    small = DepthBackend("tiny", cache_dir=root / "cache", device="cpu", map_size=16)
    out = small(_padded(_photos()[:1], 128))["depth"][0][0]
    assert out["map_size"] == [11, 16] and len(out["map"]) == 176
    for bad in (0, -3, 2000, 16.0, "64", True, None):
        with pytest.raises(ValueError, match="map_size"):
            check_map_size(bad)
        with pytest.raises(ValueError, match="map_size"):
            DepthBackend("tiny", cache_dir=root / "cache", map_size=bad)
    with pytest.raises(ValueError, match="unknown variant 'huge'"):
        DepthBackend.describe("huge")
    with pytest.raises(ValueError, match="unknown variant"):
        DepthBackend("Small", cache_dir=root / "cache")
    squares = np.zeros((2, 64, 64, 3), np.uint8)
    for sizes in ([[65, 10], [10, 10]], [[0, 10], [10, 10]], [[10, 10]]):
        with pytest.raises(ValueError, match="image_size"):
            tiny({"image": squares, "image_size": np.array(sizes)})
    with pytest.raises(ValueError, match="map_size"):
        depth_map({"map": [0.0, 1.0, 2.0], "map_size": [2, 2]})


def test_non_depth_anything_checkpoint_is_refused(tmp_path: Path) -> None:
    for config in ({"model_type": "dinov2"},
                   {"model_type": "depth_anything", "depth_estimation_type": "metric"}):
        (tmp_path / "config.json").write_text(json.dumps(config))
        with pytest.raises(ValueError, match="relative Depth Anything"):
            DepthBackend.describe(checkpoint=str(tmp_path), cache_dir=tmp_path / "cache")


def test_variants_name_their_licence() -> None:
    assert DEPTH_VARIANTS["small"]["repo"] == "depth-anything/Depth-Anything-V2-Small-hf"
    assert DEPTH_VARIANTS["small"]["licence"] == "Apache-2.0"
    for name in ("base", "large"):
        assert DEPTH_VARIANTS[name]["repo"].endswith(f"V2-{name.title()}-hf")
        assert "CC-BY-NC-4.0" in DEPTH_VARIANTS[name]["licence"]
        assert "non-commercial" in DEPTH_VARIANTS[name]["licence"]


def _run(code: str, root: Path) -> dict:
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=REPO_ROOT,
                          env={**os.environ, **_env(root)}, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_describe_imports_no_torch(tmp_path: Path) -> None:
    result = _run("""
        import json, sys
        from exoray.models.depth import DepthBackend
        infos = {v: DepthBackend.describe(v) for v in ("small", "base", "large", "tiny")}
        heavy = sorted(m for m in ("torch", "transformers") if m in sys.modules)
        print(json.dumps({"infos": infos, "heavy": heavy}))
    """, tmp_path)
    assert result["heavy"] == []
    infos = result["infos"]
    assert infos["small"]["model_id"] == "hf:depth-anything/Depth-Anything-V2-Small-hf"
    assert [infos[v]["input_size"] for v in ("small", "base", "large", "tiny")] == [518] * 3 + [112]
    assert "non-commercial" in infos["large"]["licence"] and infos["tiny"]["model_id"] == TINY_MODEL_ID
    assert (infos["small"]["batch_size"], infos["small"]["gpu_share"]) == (8, 0.25)


def test_offline_prefetch_fails_at_once_with_the_checkpoint_hint(tmp_path: Path) -> None:
    result = _run(f"""
        import json, time
        from exoray.models.depth import DepthBackend
        start = time.monotonic()
        try:
            DepthBackend.prefetch("small", cache_dir={str(tmp_path / "cache")!r})
            error = None
        except FileNotFoundError as exc:
            error = str(exc)
        print(json.dumps({{"error": error, "seconds": time.monotonic() - start}}))
    """, tmp_path)
    error = result["error"]
    assert error is not None and "\n" not in error and result["seconds"] < 20
    assert "--checkpoint PATH" in error and "Depth-Anything-V2-Small-hf" in error
