"""The sam backend and COCO RLE masks, offline.

No SAM weights can be downloaded here, so the model tests use the `tiny` variant (random weights
built from segment-anything's own modules) and check plumbing only: schema, types, the valid
region, boxes and areas consistent with the decoded masks, the checkpoint path, options and
offline errors. They say nothing about mask quality. The RLE codec is checked bit for bit
against pycocotools (a test-only dependency).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import socket
import subprocess
import sys
import textwrap
import time
import urllib.error
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from pycocotools import mask as coco

import exoray.models.sam as sam_module
from exoray.models import describe_backend, load_backend, prefetch_backend
from exoray.models.sam import SamBackend, sam_options
from exoray.semantics.masks import (
    decode_all,
    decode_rle,
    encode_rle,
    image_masks,
    masks_to_image,
    rle_area,
    rle_bbox,
    string_to_counts,
)
from exoray.semantics.schemas import SAM_SCHEMA

REPO_ROOT = Path(__file__).resolve().parents[1]
KEYS = {"rle", "bbox", "area", "predicted_iou", "stability_score", "point"}


# ----- COCO RLE -------------------------------------------------------------------------------


def _coco(mask: np.ndarray) -> dict:
    return coco.encode(np.asfortranarray(mask.astype(np.uint8)))


def _masks() -> list[np.ndarray]:
    rng = np.random.default_rng(3)
    out = [np.zeros((5, 7), bool), np.ones((5, 7), bool), np.zeros((1, 1), bool),
           np.ones((1, 1), bool), np.zeros((4, 9), bool)]
    out[-1][2, 3] = True  # one pixel
    for _ in range(60):
        h, w = (int(v) for v in rng.integers(1, 50, 2))
        out.append(rng.random((h, w)) < rng.random())
        box = np.zeros((h, w), bool)
        y, x = rng.integers(0, h), rng.integers(0, w)
        box[y:y + rng.integers(1, 30), x:x + rng.integers(1, 30)] = True
        out.append(box)
    far = np.zeros((2001, 1999), bool)  # long runs: multi-character numbers, negative deltas
    far[-1, -1] = far[0, 5] = far[1000, 1000] = True
    return [*out, far]


def test_rle_matches_pycocotools_and_round_trips() -> None:
    for mask in _masks():
        rle, ref = encode_rle(mask), _coco(mask)
        assert rle == {"counts": ref["counts"].decode(), "size": list(mask.shape)}
        back = decode_rle(rle)
        assert back.dtype == bool and back.shape == mask.shape and (back == mask).all()
        assert (decode_rle({"counts": ref["counts"], "size": ref["size"]}) == mask).all()
        assert rle_area(rle) == int(coco.area(ref)) == int(mask.sum())
        x0, y0, x1, y1 = rle_bbox(rle)
        if mask.any():
            assert [x0, y0, x1 - x0, y1 - y0] == coco.toBbox(ref).astype(int).tolist()
        else:
            assert [x0, y0, x1, y1] == [0, 0, 0, 0]
        ours = coco.decode({"counts": rle["counts"].encode(), "size": rle["size"]})
        assert (ours.astype(bool) == mask).all()


def test_uncompressed_counts_and_empty_sizes() -> None:
    mask = np.array([[1, 0, 1], [1, 1, 0]], bool)  # column-major: 1 1 0 1 1 0 -> 0,2,1,2,1
    rle = {"counts": [0, 2, 1, 2, 1], "size": [2, 3]}
    assert (decode_rle(rle) == mask).all() and rle_area(rle) == 4
    assert encode_rle(mask)["counts"] == coco.frPyObjects(rle, 2, 3)["counts"].decode()
    zero = encode_rle(np.zeros((0, 4), bool))
    assert zero == {"counts": "0", "size": [0, 4]} and decode_rle(zero).shape == (0, 4)
    with pytest.raises(ValueError, match="sum to"):
        decode_rle({"counts": [0, 5], "size": [2, 3]})
    with pytest.raises(ValueError, match="COCO compressed"):
        string_to_counts("0P")  # ends mid-number
    with pytest.raises(ValueError, match="one"):
        encode_rle(np.zeros((2, 2, 2), bool))


def test_encode_is_fast_on_a_large_mask() -> None:
    yy, xx = np.mgrid[:768, :1024]
    mask = ((yy - 300) ** 2 + (xx - 500) ** 2 < 200**2) | ((xx // 37) % 5 == 0)
    encode_rle(mask)
    started = time.perf_counter()
    rle = encode_rle(mask)
    elapsed = time.perf_counter() - started
    assert rle["counts"] == _coco(mask)["counts"].decode()
    assert elapsed < 0.25, f"encoding a 1024x768 mask took {elapsed:.3f} s"  # ~2 ms idle


def test_image_masks_reads_a_parquet_row_and_resizes() -> None:
    a = np.zeros((6, 8), bool)
    a[1:3, 2:6] = True
    b = np.zeros((6, 8), bool)
    b[:, :4] = True
    structs = [{"rle": encode_rle(m), "bbox": [0.0] * 4, "area": 0.1, "predicted_iou": 0.9,
                "stability_score": 0.9, "point": [0.5, 0.5]} for m in (a, b)]
    rows = pa.table({"masks": pa.array([structs, []], SAM_SCHEMA.field("masks").type)})
    row, empty = rows.to_pylist()
    got = image_masks(row)
    assert got.dtype == bool and got.shape == (2, 6, 8)
    assert (got[0] == a).all() and (got[1] == b).all()
    big = image_masks(row, size=(12, 16))  # 2x nearest: each pixel a 2x2 block
    assert big.shape == (2, 12, 16) and (big[0] == a.repeat(2, 0).repeat(2, 1)).all()
    assert image_masks(rows.to_pandas().iloc[0]).shape == (2, 6, 8)
    assert image_masks(empty).shape == (0, 0, 0)
    assert image_masks(empty, size=(4, 5)).shape == (0, 4, 5)
    labels = masks_to_image([s["rle"] for s in structs])
    assert labels.dtype == np.int32 and labels.shape == (6, 8)
    assert (labels[a] == 1).all() and (labels[b & ~a] == 2).all() and (labels[~(a | b)] == 0).all()
    with pytest.raises(ValueError, match="one size"):
        decode_all([encode_rle(a), encode_rle(np.zeros((3, 3), bool))])


# ----- the sam backend ------------------------------------------------------------------------


def _sha16(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def _scene() -> np.ndarray:
    """A 240x180 picture: a bright disc and a dark rectangle on a plain background."""
    pic = np.full((180, 240, 3), 70, np.uint8)
    yy, xx = np.mgrid[:180, :240]
    pic[(yy - 70) ** 2 + (xx - 80) ** 2 < 40**2] = (235, 220, 200)
    pic[100:160, 150:220] = (15, 20, 30)
    return pic


def _batch(pics: list[np.ndarray], side: int = 256) -> dict[str, np.ndarray]:
    squares = np.full((len(pics), side, side, 3), 114, np.uint8)
    for square, pic in zip(squares, pics, strict=True):
        square[: pic.shape[0], : pic.shape[1]] = pic
    return {"image": squares, "image_size": np.array([[p.shape[1], p.shape[0]] for p in pics])}


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory):
    """Offline, caches and staging in temp dirs, and any socket use fails loudly."""
    root = tmp_path_factory.mktemp("sam-env")

    def no_network(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"network access attempted: {args!r}")

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "1")
        mp.setenv("EXORAY_LOCAL_MODELS_DIR", str(root / "local-models"))
        mp.setenv("EXORAY_MODELS_DIR", str(root / "default-models"))
        mp.setattr(socket.socket, "connect", no_network)
        mp.setattr(socket, "getaddrinfo", no_network)
        yield root


@pytest.fixture(scope="module")
def tiny(env: Path) -> SamBackend:
    return load_backend("sam:tiny", cache_dir=env / "cache", device="cpu")


@pytest.fixture(scope="module")
def tiny_file(env: Path, tiny: SamBackend) -> Path:
    """The tiny model's weights as a local .pth: the real checkpoint loading path."""
    import torch

    path = env / "weights" / "tiny-sam.pth"
    path.parent.mkdir()
    torch.save(tiny.model.state_dict(), path)
    return path


def _check(masks: list, width: int, height: int, max_masks: int, least: int = 1) -> None:
    assert isinstance(masks, list) and least <= len(masks) <= max_masks
    for m in masks:
        assert set(m) == KEYS and set(m["rle"]) == {"counts", "size"}
        assert isinstance(m["rle"]["counts"], str) and m["rle"]["size"] == [height, width]
        assert all(isinstance(v, float) for v in [*m["bbox"], *m["point"], m["area"],
                                                  m["predicted_iou"], m["stability_score"]])
        mask = decode_rle(m["rle"])
        assert mask.shape == (height, width) and mask.any()
        ys, xs = np.nonzero(mask)
        box = [xs.min() / width, ys.min() / height, (xs.max() + 1) / width, (ys.max() + 1) / height]
        assert np.allclose(m["bbox"], box) and 0 <= box[0] < box[2] <= 1
        assert m["area"] == pytest.approx(mask.mean())
        assert all(0 <= v <= 1 for v in m["point"])
    ious = [m["predicted_iou"] for m in masks]
    assert ious == sorted(ious, reverse=True)


def test_tiny_masks_cover_the_valid_region_only(tiny: SamBackend) -> None:
    assert (tiny.model_id, tiny.input_size) == ("segment_anything:tiny(random)", 256)
    assert tiny.options["pred_iou_thresh"] == 0.0 and tiny.options["points_per_side"] == 8
    wide = np.full((256, 256, 3), 200, np.uint8)
    out = tiny({**_batch([_scene(), wide[:100]])})
    assert list(out) == ["masks"] and out["masks"].dtype == object and len(out["masks"]) == 2
    _check(out["masks"][0], 240, 180, tiny.options["max_masks"])
    _check(out["masks"][1], 256, 100, tiny.options["max_masks"])
    whole = tiny({"image": _batch([wide])["image"]})["masks"][0]  # no image_size: whole square
    _check(whole, 256, 256, tiny.options["max_masks"])
    with pytest.raises(ValueError, match="outside"):
        tiny({"image": _batch([_scene()])["image"], "image_size": np.array([[300, 180]])})


def test_crops_and_small_region_removal_run(env: Path) -> None:
    """The generator's other paths (crop layers, hole filling with cv2) with our RLE counts."""
    backend = SamBackend("tiny", cache_dir=env / "cache", device="cpu", points_per_side=4,
                         crop_n_layers=1, min_mask_region_area=30, max_masks=3)
    assert backend.generator.crop_n_layers == 1 and backend.generator.min_mask_region_area == 30
    _check(backend(_batch([_scene()]))["masks"][0], 240, 180, 3, least=0)


def test_tiny_checkpoint_loads_the_same_weights(env: Path, tiny: SamBackend,
                                                tiny_file: Path) -> None:
    info = describe_backend("sam:tiny", checkpoint=str(tiny_file))
    assert (info["model_id"], info["input_size"]) == (f"local:{tiny_file}", 256)
    loaded = SamBackend("tiny", checkpoint=tiny_file, cache_dir=env / "cache", device="cpu")
    assert loaded.model_id == f"local:{tiny_file}" and loaded.weights_hash == _sha16(tiny_file)
    assert loaded.weights_hash != tiny.weights_hash
    batch = _batch([_scene()])
    assert loaded(batch)["masks"][0] == tiny(batch)["masks"][0]
    bad = env / "weights" / "not-sam.pth"
    import torch

    torch.save({"layer.weight": torch.zeros(2)}, bad)
    with pytest.raises(ValueError, match="does not fit the 'tiny' architecture.*not a segm"):
        SamBackend("tiny", checkpoint=bad, cache_dir=env / "cache", device="cpu")
    assert "looks like vit_l" in sam_module._architecture(
        {"image_encoder.patch_embed.proj.weight": torch.zeros(1024, 3, 16, 16)})
    with pytest.raises(FileNotFoundError, match="not a file"):
        SamBackend("tiny", checkpoint=env / "missing.pth", cache_dir=env / "cache")
    with pytest.raises(FileNotFoundError, match=r"\.pth"):
        prefetch_backend("sam:vit_l", checkpoint=str(env / "weights"))  # a folder
    wrong = env / "weights" / "model.onnx"
    wrong.write_bytes(b"x")
    with pytest.raises(ValueError, match=r"\.pth"):
        prefetch_backend("sam", checkpoint=str(wrong))


def test_max_masks_keeps_the_best_and_sorts_by_predicted_iou() -> None:
    import torch

    masks = torch.zeros((4, 6, 8), dtype=torch.bool)
    masks[0, 1:3, 2:6] = masks[1, :, :4] = masks[3, 5, 7] = True  # masks[2] is empty
    anns = [{"segmentation": rle, "area": int(m.sum()), "predicted_iou": iou,
             "stability_score": stab, "point_coords": [[4.0, 3.0]]}
            for rle, m, iou, stab in zip(sam_module._mask_to_rle(masks), masks,
                                         (0.9, 0.5, 1.0, 0.8), (0.5, 1.0, 1.0, 0.9), strict=True)]
    top = sam_module._records(anns, max_masks=2)  # products 0.45, 0.5, (empty), 0.72
    assert [m["predicted_iou"] for m in top] == [0.8, 0.5]
    assert top[0]["bbox"] == [7 / 8, 5 / 6, 1.0, 1.0] and top[0]["area"] == 1 / 48
    assert top[1]["bbox"] == [0.0, 0.0, 0.5, 1.0] and top[0]["point"] == [0.5, 0.5]
    assert (decode_rle(top[1]["rle"]) == masks[1].numpy()).all()


def test_fast_rle_matches_segment_anything() -> None:
    import torch
    from segment_anything.utils.amg import mask_to_rle_pytorch

    gen = torch.Generator().manual_seed(0)
    masks = torch.rand((6, 13, 11), generator=gen) < 0.5
    masks[0], masks[1] = False, True
    masks[2, 0, 0] = True
    ours, theirs = sam_module._mask_to_rle(masks), mask_to_rle_pytorch(masks)
    assert [(r["size"], r["counts"].tolist()) for r in ours] == \
        [(r["size"], r["counts"]) for r in theirs]
    assert sam_module._mask_to_rle(masks[:0]) == []


def test_cuda_oom_halves_points_per_batch(tiny: SamBackend, monkeypatch) -> None:
    import torch

    real, calls = tiny.generator.generate, []

    def flaky(image: np.ndarray) -> list:
        calls.append(tiny.generator.points_per_batch)
        if len(calls) == 1:
            raise torch.cuda.OutOfMemoryError("fake")
        return real(image)

    monkeypatch.setattr(tiny.generator, "generate", flaky)
    before = tiny.generator.points_per_batch
    try:
        masks = tiny(_batch([_scene()]))["masks"][0]
    finally:
        tiny.generator.points_per_batch = before
    assert calls == [before, before // 2] and masks
    assert tiny.events[-1] == {"event": "oom_backoff", "backend": "sam", "option":
                               "points_per_batch", "model_id": tiny.model_id,
                               "from": before, "to": before // 2}


def test_describe_imports_no_torch() -> None:
    code = textwrap.dedent(
        """
        import json, sys
        import exoray.models.sam
        from exoray.models import describe_backend
        infos = [describe_backend(s) for s in ("sam", "sam:tiny", "sam:vit_h")]
        heavy = sorted(m for m in ("torch", "segment_anything") if m in sys.modules)
        print(json.dumps({"infos": infos, "heavy": heavy}))
        """
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=120, env={**os.environ})
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["heavy"] == []
    default, tiny, huge = result["infos"]
    assert (default["variant"], default["model_id"], default["input_size"]) == (
        "vit_b", "segment_anything:sam_vit_b_01ec64.pth", 1024)
    assert default["task"] == "sam" and default["output_columns"] == ["masks"]
    assert default["output_kind"] == "structs" and default["batch_size"] == 1
    assert default["gpu_share"] == 1.0
    assert (tiny["model_id"], tiny["input_size"]) == ("segment_anything:tiny(random)", 256)
    assert huge["model_id"] == "segment_anything:sam_vit_h_4b8939.pth"


@pytest.mark.parametrize("options", [
    {"points_per_side": 0}, {"max_masks": 0}, {"pred_iou_thresh": 1.5},
    {"stability_score_thresh": -0.1}, {"points_per_batch": 2.5}, {"crop_n_layers": -1},
    {"min_mask_region_area": "10"}, {"max_masks": True}, {"points_per_side": None, "box": 1},
])
def test_bad_options_fail_before_loading(options: dict) -> None:
    with pytest.raises(ValueError):
        SamBackend("tiny", **options) if "box" not in options else sam_options("tiny", **options)


def test_options_defaults_per_variant() -> None:
    real = sam_options("vit_b")
    assert real == {"points_per_side": 32, "max_masks": 64, "pred_iou_thresh": 0.88,
                    "stability_score_thresh": 0.95, "min_mask_region_area": 0,
                    "points_per_batch": 64, "crop_n_layers": 0}
    assert sam_options("tiny", pred_iou_thresh=0.5)["pred_iou_thresh"] == 0.5
    assert sam_options("vit_h", points_per_side=16.0)["points_per_side"] == 16
    with pytest.raises(ValueError, match="unknown variant"):
        describe_backend("sam:vit_x")


def test_offline_prefetch_names_the_checkpoint_flag(env: Path) -> None:
    started = time.perf_counter()
    with pytest.raises(FileNotFoundError) as err:
        prefetch_backend("sam:vit_b", cache_dir=env / "cache")
    message = str(err.value)
    assert "--checkpoint PATH" in message and "HF_HUB_OFFLINE" in message
    assert "sam_vit_b_01ec64.pth" in message and "\n" not in message
    assert time.perf_counter() - started < 5
    prefetch_backend("sam:tiny", cache_dir=env / "cache")  # nothing to fetch


def test_network_failure_and_bad_download(env: Path, monkeypatch) -> None:
    for key in ("HF_HUB_OFFLINE", "YOLO_OFFLINE", "EXORAY_OFFLINE"):
        monkeypatch.delenv(key, raising=False)
    cache = env / "net-cache"

    def unreachable(url: str, timeout: float) -> None:
        raise urllib.error.URLError("no route to host")

    monkeypatch.setattr(sam_module.urllib.request, "urlopen", unreachable)
    with pytest.raises(FileNotFoundError, match="no route to host.*--checkpoint PATH"):
        prefetch_backend("sam:vit_l", cache_dir=cache)
    monkeypatch.setattr(sam_module.urllib.request, "urlopen",
                        lambda url, timeout: io.BytesIO(b"an error page"))
    with pytest.raises(FileNotFoundError, match="MD5"):
        prefetch_backend("sam:vit_h", cache_dir=cache)
    assert list((cache / "sam").iterdir()) == []  # no partial or wrong file left behind
