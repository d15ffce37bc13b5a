"""Monocular depth with Depth Anything V2 (transformers): per-image statistics plus a small map.

What the numbers mean. Depth Anything's relative models predict *relative inverse depth*
(disparity-like, larger = nearer, >= 0) that is only defined up to an unknown scale and shift per
image. So compare values within one image, never across images: "min"/"max"/"mean"/"p05"/"p50"/
"p95" are those of the predicted disparity over the picture (the valid region of the padded square,
at the model's resolution); "map" is the same prediction area-averaged to at most `map_size` pixels
on its long side, keeping the picture's aspect ("map_size" = [h, w], row-major, far = small).
"near_far_ratio" is the fraction of the picture nearer than halfway between its far end (p05) and
its near end (p95) of disparity: in [0, 1], unchanged by the unknown scale and shift, and blind to
the 5 % outliers at either end (0.0 for a flat prediction). A close-up or wall scores high, an
open landscape with a thin foreground low.

Geometry. Each picture is cropped out of its padded square and resized, keeping its aspect, so its
long side is the model's `input_size` (518) and both sides are multiples of the patch size (14);
images with the same resulting shape share a forward pass. Squashing to 518x518 would bend the
scene the model reasons about; padding to a square would feed a global-attention model gray
borders that change its prediction of the picture; and the reference processor's "short side 518"
upsamples pixels the decode stage never had, at up to 1.8x the tokens for a 16:9 photo.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from exoray.models._logs import quiet_loading
from exoray.models.base import ModelBackend, checkpoint_model_id, import_or_raise
from exoray.models.padded import valid_sizes
from exoray.models.preprocess import PIL_RESAMPLE, as_hw
from exoray.models.registry import register_backend
from exoray.models.weights import (
    resolve_checkpoint,
    stage_locally,
    weight_files,
    weights_hash,
)

_REAL = {"input_size": 518}  # the models' own resolution (37 patches of 14 px)
# small: Apache-2.0. base/large: CC-BY-NC-4.0, i.e. NON-COMMERCIAL use only (shown by README/CLI).
DEPTH_VARIANTS: dict[str, dict[str, Any]] = {
    "small": {**_REAL, "repo": "depth-anything/Depth-Anything-V2-Small-hf",
              "licence": "Apache-2.0"},
    "base": {**_REAL, "repo": "depth-anything/Depth-Anything-V2-Base-hf",
             "licence": "CC-BY-NC-4.0 (non-commercial use only)"},
    "large": {**_REAL, "repo": "depth-anything/Depth-Anything-V2-Large-hf",
              "licence": "CC-BY-NC-4.0 (non-commercial use only)", "batch_size": 4},
    "tiny": {"tiny": True, "licence": "random weights, for tests"},
}
TINY_MODEL_ID = "tiny:depth-anything(random)"
HUB_FILES = ["config.json", ("model.safetensors", "pytorch_model.bin")]
HUB_OPTIONAL = ("preprocessor_config.json",)
WEIGHT_PATTERNS = ("model.safetensors", "model-*-of-*.safetensors", "pytorch_model*.bin")
DEFAULT_PREPROCESS: dict[str, Any] = {  # Depth Anything V2's preprocessor_config.json
    "size": {"height": 518, "width": 518}, "ensure_multiple_of": 14, "keep_aspect_ratio": True,
    "image_mean": [0.485, 0.456, 0.406], "image_std": [0.229, 0.224, 0.225], "resample": 3,
}
TINY_SEED = 0
TINY: dict[str, Any] = {  # a 120k-parameter DepthAnything on a 4-layer Dinov2, 112 px
    "config": {"backbone_config": {"model_type": "dinov2", "hidden_size": 32, "num_hidden_layers": 4,
                                   "num_attention_heads": 2, "mlp_ratio": 2, "patch_size": 14,
                                   "image_size": 112, "out_indices": [1, 2, 3, 4],
                                   "reshape_hidden_states": False},
               "reassemble_hidden_size": 32, "neck_hidden_sizes": [8, 16, 32, 32],
               "fusion_hidden_size": 16, "head_hidden_size": 8, "patch_size": 14},
    "preprocessor_config": {**DEFAULT_PREPROCESS, "image_processor_type": "DPTImageProcessor",
                            "size": {"height": 112, "width": 112}},
}
MAX_MAP_SIZE = 1024


def check_map_size(value: Any) -> int:
    """The `map_size` run option: long side of the stored map in pixels, an int in 1..1024."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not (
        1 <= value <= MAX_MAP_SIZE
    ):
        raise ValueError(f"map_size must be an int from 1 to {MAX_MAP_SIZE}, got {value!r}")
    return int(value)


@register_backend
class DepthBackend(ModelBackend):
    """Depth Anything V2 -> per image [{min, max, mean, p05, p50, p95, near_far_ratio, map,
    map_size}] of relative disparity (see the module docstring for what they mean)."""

    name = "depth"
    task = "depth"
    input_columns = ("image",)
    optional_inputs = ("image_size",)
    output_columns = ("depth",)
    output_kind = "structs"
    default_batch_size = 8
    default_gpu_share = 0.25
    extra = "depth"
    variants = DEPTH_VARIANTS
    default_variant = "small"
    variant_help = "; or pass a local Depth Anything folder with checkpoint='/path/dir'"
    requires = ("torch", "transformers")

    def __init__(self, variant: str | None = None, *, map_size: int = 64, **kwargs: Any) -> None:
        """kwargs: the base constructor's (checkpoint, cache_dir, device, batch_size, ...)."""
        self.map_size = check_map_size(map_size)
        super().__init__(variant, **kwargs)

    @classmethod
    def _describe(cls, variant: str, checkpoint: str | None, cache_dir: Path) -> dict[str, Any]:
        settings = cls.variants.get(variant, {})
        if checkpoint is not None:
            folder = cls._resolve(checkpoint, cache_dir)
            _check_config(_read_json(folder / "config.json"), folder)
            size = _input_size(_preprocess(folder / "preprocessor_config.json"))
            return {"model_id": checkpoint_model_id(checkpoint), "input_size": size,
                    "licence": "see the checkpoint's own licence"}
        if settings.get("tiny"):
            return {"model_id": TINY_MODEL_ID, "licence": settings["licence"],
                    "input_size": _input_size(_preprocess(TINY["preprocessor_config"]))}
        return {"model_id": f"hf:{settings['repo']}", "input_size": settings["input_size"],
                "licence": settings["licence"]}

    @classmethod
    def _resolve(cls, source: str, cache_dir: Path) -> Path:
        try:
            folder = resolve_checkpoint(source, cache_dir=cache_dir, hub_files=HUB_FILES,
                                        hub_optional=HUB_OPTIONAL)
        except FileNotFoundError as exc:  # offline, or a typo: say how to go on, on one line
            reason = " ".join(str(exc).split())[:300]
            raise FileNotFoundError(
                f"depth weights {source!r} are not available ({reason}); pass a local copy of "
                "the model folder (config.json + model.safetensors) as --checkpoint PATH "
                "(checkpoint='PATH' in Python)") from exc
        if not folder.is_dir():
            raise ValueError(f"depth checkpoint {str(folder)!r} must be a folder written by "
                             "save_pretrained (config.json + model.safetensors), not one file")
        return folder

    @classmethod
    def _prefetch(cls, variant: str, checkpoint: str | None, cache_dir: Path) -> None:
        settings = cls.variants.get(variant, {})
        if checkpoint is not None or not settings.get("tiny"):
            cls._resolve(checkpoint or settings["repo"], cache_dir)

    def _load(self) -> None:
        tf = self._require("transformers")
        settings = self.variant_settings
        if self.checkpoint is not None:
            folder = self._resolve(self.checkpoint, self.cache_dir)
            self.model_id = checkpoint_model_id(self.checkpoint)
        elif settings.get("tiny"):
            folder = stage_locally(_ensure_tiny(self.cache_dir), cache_dir=self.cache_dir)
            self.model_id = TINY_MODEL_ID
        else:
            folder = self._resolve(settings["repo"], self.cache_dir)
            self.model_id = f"hf:{settings['repo']}"
        _check_config(_read_json(folder / "config.json"), folder)
        config = tf.AutoConfig.from_pretrained(str(folder), local_files_only=True)
        if config.max_depth is None:  # a null in config.json crashes the 5.x head; relative = 1
            config.max_depth = 1
        with quiet_loading():  # transformers is imported now, so its progress bars can be muted
            model = tf.AutoModelForDepthEstimation.from_pretrained(
                str(folder), config=config, local_files_only=True)
        self.model = model.float().eval().to(self.device)  # fp32 weights; CUDA adds autocast
        self.weights_hash = weights_hash(weight_files(folder, WEIGHT_PATTERNS))
        self.preprocess = _preprocess(folder / "preprocessor_config.json")
        self.input_size = _input_size(self.preprocess)

    def _target(self, w: int, h: int) -> tuple[int, int]:
        """(height, width) the model sees for a w x h picture (see the module docstring)."""
        cfg, m = self.preprocess, int(self.preprocess.get("ensure_multiple_of") or 1)
        if cfg.get("keep_aspect_ratio", True):
            scale = self.input_size / max(w, h)
            th, tw = h * scale, w * scale
        else:  # the checkpoint asks for a fixed shape: honour it
            th, tw = as_hw(cfg["size"])
        return max(m, round(th / m) * m), max(m, round(tw / m) * m)

    def _forward(self, images: np.ndarray, image_size: np.ndarray | None = None) -> list[list]:
        torch, F = self._torch, self._torch.nn.functional
        sizes = valid_sizes(images, image_size)
        mode = PIL_RESAMPLE.get(int(self.preprocess.get("resample", 3)), "bicubic")
        mean = torch.tensor(self.preprocess["image_mean"], device=self.device).view(1, 3, 1, 1)
        std = torch.tensor(self.preprocess["image_std"], device=self.device).view(1, 3, 1, 1)
        arr = np.ascontiguousarray(images)  # Ray may hand read-only views: torch warns on those
        x = torch.from_numpy(arr if arr.flags.writeable else arr.copy()).to(self.device)
        groups: dict[tuple[int, int], list[int]] = {}
        for i, (w, h) in enumerate(sizes):
            groups.setdefault(self._target(w, h), []).append(i)
        out: list[list] = [[] for _ in sizes]
        for (th, tw), idx in groups.items():
            crops = []
            for i in idx:
                w, h = sizes[i]
                crop = x[i, :h, :w].permute(2, 0, 1)[None].float()
                if (h, w) != (th, tw):
                    extra = {} if mode == "nearest" else {"align_corners": False,
                                                          "antialias": th < h or tw < w}
                    crop = F.interpolate(crop, size=(th, tw), mode=mode, **extra).clamp_(0, 255)
                crops.append(crop)
            pixels = (torch.cat(crops) / 255.0 - mean) / std
            with self._inference():
                pred = self.model(pixel_values=pixels).predicted_depth.float()
            for j, i in enumerate(idx):
                out[i] = [self._summary(pred[j], *sizes[i])]
        return out

    def _summary(self, pred: Any, w: int, h: int) -> dict[str, Any]:
        """One (th, tw) prediction -> the struct: statistics at model resolution, plus the map."""
        scale = self.map_size / max(w, h)
        mh, mw = max(1, round(h * scale)), max(1, round(w * scale))
        shrink = mh <= pred.shape[0] and mw <= pred.shape[1]
        small = self._torch.nn.functional.interpolate(
            pred[None, None], size=(mh, mw), mode="area" if shrink else "bilinear",
            **({} if shrink else {"align_corners": False}))
        values = pred.flatten().cpu().numpy().astype(np.float64)
        p05, p50, p95 = (float(v) for v in np.percentile(values, [5, 50, 95]))
        near = float(np.mean(values > (p05 + p95) / 2)) if p95 > p05 else 0.0
        return {"min": float(values.min()), "max": float(values.max()),
                "mean": float(values.mean()), "p05": p05, "p50": p50, "p95": p95,
                "near_far_ratio": near, "map": small.flatten().cpu().tolist(),
                "map_size": [mh, mw]}


def depth_map(row: Any) -> np.ndarray:
    """A row of ``features/depth`` (``depth_map``, ``map_height``, ``map_width``), or the backend's
    struct (or a dict holding it under "depth") -> float32 (h, w) map."""
    item = row
    if isinstance(item, Mapping) and "depth_map" in item:  # a stored row (read_task)
        item = {"map": item["depth_map"], "map_size": [item["map_height"], item["map_width"]]}
    if isinstance(item, Mapping) and "map" not in item and "depth" in item:
        item = item["depth"]
    if isinstance(item, (list, tuple, np.ndarray)) and len(item) == 1:  # the backend's output
        item = item[0]
    try:
        values, (h, w) = np.asarray(item["map"], np.float32), (int(v) for v in item["map_size"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"depth_map needs a row with 'map' and 'map_size' ({exc!r})") from exc
    if values.size != h * w:
        raise ValueError(f"depth map has {values.size} values for map_size {[h, w]}")
    return values.reshape(h, w)


def build_tiny_depth(out_dir: str | os.PathLike[str]) -> str:
    """Write the seeded tiny DepthAnything as save_pretrained does, plus its processor config.

    Random DPT heads end in a ReLU on a ~1e-7 signal (an all-zero map), so the convolutions get a
    variance-keeping init and the last bias 1: the map then varies with the picture, which the
    crop tests need. The numbers still mean nothing about depth.
    """
    tf = import_or_raise("transformers", extra="depth", backend="depth")
    torch = import_or_raise("torch", extra="depth", backend="depth")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.manual_seed(TINY_SEED)
        model = tf.DepthAnythingForDepthEstimation(tf.DepthAnythingConfig(**TINY["config"]))
        for mod in model.modules():
            if isinstance(mod, (torch.nn.Conv2d, torch.nn.ConvTranspose2d, torch.nn.Linear)):
                torch.nn.init.kaiming_normal_(mod.weight, nonlinearity="relu")
        model.head.conv3.bias.fill_(1.0)
    with quiet_loading():
        model.save_pretrained(str(out))
    (out / "preprocessor_config.json").write_text(json.dumps(TINY["preprocessor_config"]))
    return str(out)


def _ensure_tiny(cache_dir: Path) -> Path:
    """`cache_dir/tiny-depth`, built once (see `exoray.models.tiny.ensure_built`)."""
    from exoray.models.tiny import ensure_built

    return ensure_built("depth", TINY, build_tiny_depth, cache_dir, seed=TINY_SEED)


def _check_config(config: Mapping[str, Any], folder: Path) -> None:
    kind, estimate = config.get("model_type"), config.get("depth_estimation_type") or "relative"
    if kind != "depth_anything" or estimate != "relative":
        raise ValueError(
            f"checkpoint {str(folder)!r} is a {kind!r} ({estimate}) model; the depth backend loads relative Depth Anything models (model_type "
            "'depth_anything'), whose output is disparity, not metric depth")


def _read_json(path: Path, strict: bool = True) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except ValueError as exc:
        if not strict:
            return {}
        raise ValueError(f"{str(path)!r} is not valid JSON ({exc}); fix or delete it") from exc
    return data if isinstance(data, dict) else {}


def _preprocess(source: Path | Mapping[str, Any]) -> dict[str, Any]:
    """The checkpoint's image-processor settings over Depth Anything's defaults."""
    return {**DEFAULT_PREPROCESS, **(_read_json(source) if isinstance(source, Path) else source)}


def _input_size(cfg: Mapping[str, Any]) -> int:
    return max(as_hw(cfg.get("size") or DEFAULT_PREPROCESS["size"]))


