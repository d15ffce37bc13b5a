"""Object detection with ultralytics YOLO: boxes, classes and scores per image.

Images arrive as padded squares (picture top-left, gray 114 padding) with each picture's valid
(width, height) in `image_size`; boxes come back normalised to that valid region, so they do not
depend on the square the pipeline chose. Hub weights are fetched once into
`cache_dir/ultralytics/<name>.pt` in the driver (`prefetch`); workers only read that file. A
local `.pt` or `.onnx` checkpoint works wherever a hub name does. ultralytics and torch are
imported only when a model is loaded or fetched.
"""

from __future__ import annotations

import hashlib
import math
import os
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from exoray.models.base import ModelBackend
from exoray.models.padded import valid_sizes
from exoray.models.registry import register_backend
from exoray.models.weights import stage_locally, weights_hash

DEFAULT_INPUT_SIZE = 640
TINY_YAML, TINY_SEED = "yolov8n.yaml", 0
CHECKPOINT_SUFFIXES = (".pt", ".onnx")
# Detection assets ultralytics releases (a subset of its GITHUB_ASSETS_STEMS, kept here so that
# checking a variant name needs no import); tests check each name against ultralytics' list.
HUB_PATTERN = re.compile(
    r"yolov8[nsmlx](-oiv7)?|yolo1[12][nsmlx]|yolo26[nsmlx]|yolov5[nsmlx]6?u"
    r"|yolov9[tsmce]|yolov10[nsmblx]|yolov3(-spp|-tiny)?u"
)
_LICENSE = "AGPL-3.0 (ultralytics)"
YOLO_VARIANTS: dict[str, dict[str, Any]] = {
    **{f"yolo11{k}": {"hub": f"yolo11{k}", "license": _LICENSE} for k in "nsmlx"},
    **{f"yolov8{k}": {"hub": f"yolov8{k}", "license": _LICENSE} for k in "nsmlx"},
    **{f"yolo26{k}": {"hub": f"yolo26{k}", "license": _LICENSE} for k in "ns"},
    "tiny": {"tiny": True, "input_size": 128},
}
_OFFLINE_ENV = ("YOLO_OFFLINE", "HF_HUB_OFFLINE")


@register_backend
class YoloBackend(ModelBackend):
    """ultralytics YOLO detector -> per image a list of {box, class_id, class_name, score}."""

    name = "yolo"
    task = "detect"
    input_columns = ("image",)
    optional_inputs = ("image_size",)
    output_columns = ("detections",)
    output_kind = "structs"
    default_batch_size = 16
    default_gpu_share = 0.25
    fp16 = False  # ultralytics manages precision: predict(half=True) on CUDA
    extra = "detect"
    variants = YOLO_VARIANTS
    default_variant = "yolo11n"
    variant_help = (
        ", or any ultralytics detection asset (yolov8n, yolo12s, yolov10b, ...); pass your own "
        "weights with checkpoint='/path/best.pt' (or .onnx)"
    )
    requires = ("torch", "ultralytics")

    class_names: dict[int, str]

    def __init__(
        self,
        variant: str | None = None,
        *,
        checkpoint: str | os.PathLike[str] | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
        device: str | None = None,
        batch_size: int | None = None,
        gpu_share: float | None = None,
        conf: float = 0.25,
        iou: float = 0.7,
        max_det: int = 300,
    ) -> None:
        """conf/iou/max_det: ultralytics' score threshold, NMS IoU and detections per image."""
        self.conf = _fraction("conf", conf)
        self.iou = _fraction("iou", iou)
        if isinstance(max_det, bool) or not isinstance(max_det, (int, np.integer)) or max_det < 1:
            raise ValueError(f"max_det must be an int >= 1, got {max_det!r}")
        self.max_det = int(max_det)
        super().__init__(variant, checkpoint=checkpoint, cache_dir=cache_dir, device=device,
                         batch_size=batch_size, gpu_share=gpu_share)

    @classmethod
    def _accepts_variant(cls, variant: str) -> bool:
        return HUB_PATTERN.fullmatch(variant) is not None

    @classmethod
    def _describe(cls, variant: str, checkpoint: str | None, cache_dir: Path) -> dict[str, Any]:
        return {"model_id": cls._model_id(variant, checkpoint), "input_size": _input_size(variant)}

    @classmethod
    def _model_id(cls, variant: str, checkpoint: str | None) -> str:
        if checkpoint is not None:
            return f"local:{_checkpoint_path(checkpoint)}"
        if cls.variants.get(variant, {}).get("tiny"):
            return f"ultralytics:{TINY_YAML}(random)"
        return f"ultralytics:{_hub_name(variant)}"

    @classmethod
    def _prefetch(cls, variant: str, checkpoint: str | None, cache_dir: Path) -> None:
        if checkpoint is not None:
            _checkpoint_path(checkpoint)
        elif not cls.variants.get(variant, {}).get("tiny"):
            _fetch_hub(_hub_name(variant), cache_dir)

    def _load(self) -> None:
        _quiet_ultralytics_env(self.cache_dir)
        ultralytics = self._require("ultralytics")
        self.input_size = _input_size(self.variant)
        self.model_id = self._model_id(self.variant, self.checkpoint)
        if self.checkpoint is not None:
            path = stage_locally(_checkpoint_path(self.checkpoint), cache_dir=self.cache_dir)
        elif self.variant_settings.get("tiny"):
            path = None
        else:
            path = _fetch_hub(_hub_name(self.variant), self.cache_dir)
        if path is None:  # seeded, so every worker builds the same random weights
            with self._torch.random.fork_rng(devices=[]):
                self._torch.manual_seed(TINY_SEED)
                self.model = ultralytics.YOLO(TINY_YAML, task="detect")
            self.weights_hash = _tiny_hash()
        else:
            self.model = ultralytics.YOLO(str(path), task="detect")
            self.weights_hash = weights_hash(path)
        if self.model.task != "detect":
            raise ValueError(
                f"{self.model_id} is a {self.model.task!r} model; the yolo backend runs detection "
                "models only"
            )
        self.class_names = {int(k): str(v) for k, v in dict(self.model.names).items()}

    def _forward(self, images: np.ndarray, image_size: np.ndarray | None = None) -> list[list]:
        height, width = images.shape[1:3]
        sizes = valid_sizes(images, image_size)
        # ultralytics' select_device sets torch to cpu_count - 1 threads on CPU at each predict
        # (1 thread on a 2-vCPU Colab): keep the count this process chose (use_cpu_threads).
        threads = self._torch.get_num_threads()
        from ultralytics.utils import torch_utils

        torch_utils.NUM_THREADS = threads  # what select_device sets on the predictor's setup
        try:
            results = self.model.predict(
                [np.ascontiguousarray(im[..., ::-1]) for im in images],  # ultralytics wants BGR
                imgsz=32 * math.ceil(max(height, width) / 32),
                conf=self.conf,
                iou=self.iou,
                max_det=self.max_det,
                device=self.device,
                half=self.device.startswith("cuda"),
                verbose=False,
            )
        finally:
            self._torch.set_num_threads(threads)
        return [self._detections(r, w, h) for r, (w, h) in zip(results, sizes, strict=True)]

    def _detections(self, result: Any, width: float, height: float) -> list[dict[str, Any]]:
        boxes = result.boxes
        xyxy = boxes.xyxy.float().cpu().numpy().reshape(-1, 4).astype(np.float64)
        scores = boxes.conf.float().cpu().numpy().reshape(-1)
        classes = boxes.cls.cpu().numpy().reshape(-1).astype(np.int64)
        xyxy = np.clip(xyxy / np.array([width, height, width, height]), 0.0, 1.0)
        out = []
        for i in np.argsort(-scores, kind="stable"):
            x0, y0, x1, y1 = (float(v) for v in xyxy[i])
            if x1 <= x0 or y1 <= y0:  # wholly inside the padding
                continue
            cid = int(classes[i])
            out.append({"box": [x0, y0, x1, y1], "class_id": cid,
                        "class_name": self.class_names.get(cid, str(cid)),
                        "score": float(scores[i])})
        return out


def _fraction(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.number)):
        raise ValueError(f"{name} must be a number between 0 and 1, got {value!r}")
    if not 0 <= value <= 1:
        raise ValueError(f"{name} must be between 0 and 1, got {value}")
    return float(value)


def _tiny_hash() -> str:
    """The tiny model's weights are a function of (yaml, seed): hash those, not a file."""
    return hashlib.sha256(f"{TINY_YAML} seed={TINY_SEED}".encode()).hexdigest()[:16]


def _input_size(variant: str) -> int:
    return int(YOLO_VARIANTS.get(variant, {}).get("input_size", DEFAULT_INPUT_SIZE))


def _hub_name(variant: str) -> str:
    return str(YOLO_VARIANTS.get(variant, {}).get("hub", variant))


def _checkpoint_path(checkpoint: str) -> Path:
    path = Path(checkpoint).expanduser().absolute()
    if not path.is_file():
        raise FileNotFoundError(
            f"yolo checkpoint {checkpoint!r} is not a file; pass a local ultralytics .pt or .onnx "
            "file, or a variant name such as yolo:yolo11s for hub weights"
        )
    if path.suffix.lower() not in CHECKPOINT_SUFFIXES:
        kinds = " or ".join(CHECKPOINT_SUFFIXES)
        raise ValueError(f"yolo checkpoint {checkpoint!r} should be an ultralytics {kinds} file")
    return path


def _quiet_ultralytics_env(cache_dir: Path) -> None:
    """Before ultralytics is imported: settings under cache_dir (not $HOME), no pip installs."""
    config = Path(cache_dir).absolute() / "ultralytics" / "config"
    os.environ.setdefault("YOLO_CONFIG_DIR", str(config))
    os.environ.setdefault("YOLO_AUTOINSTALL", "0")
    os.environ.setdefault("YOLO_VERBOSE", "0")


def _fetch_hub(name: str, cache_dir: Path) -> Path:
    """`cache_dir/ultralytics/<name>.pt`, downloaded with ultralytics' downloader if absent."""
    dest = Path(cache_dir).absolute() / "ultralytics" / f"{name}.pt"
    if dest.is_file():
        return dest
    hint = ("; connect once, or pass a local checkpoint: --checkpoint yolo=/path/best.pt "
            "(checkpoint='/path/best.pt' in Python)")
    offline = [k for k in _OFFLINE_ENV if os.environ.get(k, "").lower() in ("1", "true", "yes")]
    if offline:
        raise FileNotFoundError(
            f"yolo weights {name}.pt could not be fetched: offline ({offline[0]} is set) and not "
            f"in {str(dest.parent)!r}{hint}"
        )
    _quiet_ultralytics_env(cache_dir)
    from ultralytics.utils.downloads import attempt_download_asset

    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        got = Path(attempt_download_asset(str(dest), retry=1))
    except Exception as exc:  # network, HTTP or disk errors all mean the same to the user
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        message = f"yolo weights {name}.pt could not be fetched ({reason}){hint}"
        raise FileNotFoundError(message) from exc
    if got.is_file() and got.absolute() != dest:  # found in ultralytics' own weights_dir
        shutil.copy2(got, dest)
    if not dest.is_file():
        raise FileNotFoundError(f"yolo weights {name}.pt could not be fetched{hint}")
    return dest


