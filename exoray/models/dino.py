"""DINOv2 image embeddings through transformers.

Embedding = `pooler_output`, i.e. the final-layer-normed CLS token. That is the global descriptor
DINOv2 evaluates with k-NN retrieval, so cosine similarity between images is meaningful without a
head; mean-pooled patch tokens favour layout/texture over object identity and cost the same.

Preprocessing comes from the checkpoint's saved image-processor config (preprocessor_config.json)
when present, else DINOv2's own: ImageNet mean/std, bicubic resize of the shorter side to 256,
center crop 224.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from exoray.models._logs import quiet_loading
from exoray.models.base import checkpoint_model_id
from exoray.models.embedding import EmbeddingBackend
from exoray.models.preprocess import PIL_RESAMPLE, ImageTransform, as_hw
from exoray.models.registry import register_backend
from exoray.models.tiny import ensure_tiny, tiny_config
from exoray.models.weights import (
    resolve_checkpoint,
    stage_locally,
    weight_files,
    weights_hash,
)

# input_size/dim restate the hub configs so the driver can plan without downloading.
DINO_VARIANTS: dict[str, dict[str, Any]] = {
    "small": {"repo": "facebook/dinov2-small", "input_size": 256, "dim": 384},
    "base": {"repo": "facebook/dinov2-base", "input_size": 256, "dim": 768},
    "large": {"repo": "facebook/dinov2-large", "input_size": 256, "dim": 1024, "batch_size": 16},
    "tiny": {"tiny": True},
}
SUPPORTED_MODEL_TYPES = ("dinov2", "dinov2_with_registers")
HUB_FILES = ["config.json", ("model.safetensors", "pytorch_model.bin")]
HUB_OPTIONAL = ("preprocessor_config.json",)
WEIGHT_PATTERNS = ("model.safetensors", "model-*-of-*.safetensors", "pytorch_model*.bin")
DEFAULT_PREPROCESS: dict[str, Any] = {
    "size": {"shortest_edge": 256},
    "crop_size": {"height": 224, "width": 224},
    "do_center_crop": True,
    "image_mean": [0.485, 0.456, 0.406],
    "image_std": [0.229, 0.224, 0.225],
    "resample": 3,
}


@register_backend
class DinoBackend(EmbeddingBackend):
    """DINOv2 CLS-token image embeddings (L2-normalised)."""

    name = "dino"
    default_batch_size = 32
    default_gpu_share = 0.5
    fp16_weights = True  # matmuls already ran in fp16 under autocast; norms stay fp32 there
    extra = "dino"
    variants = DINO_VARIANTS
    default_variant = "small"
    requires = ("torch", "transformers")

    @classmethod
    def _describe(cls, variant: str, checkpoint: str | None, cache_dir: Path) -> dict[str, Any]:
        settings = cls.variants.get(variant, {})
        if checkpoint is not None:
            folder = cls._resolve(checkpoint, cache_dir)
            _require_dir(folder)
            config = _read_json(folder / "config.json")
            size = _transform_from(folder / "preprocessor_config.json").input_size
            return {
                "model_id": checkpoint_model_id(checkpoint),
                "input_size": size,
                "dim": config.get("hidden_size"),
            }
        if settings.get("tiny"):
            cfg = tiny_config("dino")
            return {
                "model_id": "tiny:dino",
                "input_size": _transform_cfg(cfg["preprocessor_config"]).input_size,
                "dim": cfg["config"]["hidden_size"],
            }
        return {
            "model_id": f"hf:{settings['repo']}",
            "input_size": settings["input_size"],
            "dim": settings["dim"],
        }

    @classmethod
    def _resolve(cls, source: str, cache_dir: Path) -> Path:
        return resolve_checkpoint(
            source, cache_dir=cache_dir, hub_files=HUB_FILES, hub_optional=HUB_OPTIONAL
        )

    @classmethod
    def _prefetch(cls, variant: str, checkpoint: str | None, cache_dir: Path) -> None:
        settings = cls.variants.get(variant, {})
        if checkpoint is not None:
            cls._resolve(checkpoint, cache_dir)
        elif not settings.get("tiny"):
            cls._resolve(settings["repo"], cache_dir)

    def _load(self) -> None:
        self._tf = self._require("transformers")
        settings = self.variant_settings
        if self.checkpoint is not None:
            folder = self._resolve(self.checkpoint, self.cache_dir)
            self.model_id = checkpoint_model_id(self.checkpoint)
        elif settings.get("tiny"):
            folder = stage_locally(ensure_tiny("dino", self.cache_dir), cache_dir=self.cache_dir)
            self.model_id = "tiny:dino"
        else:
            folder = self._resolve(settings["repo"], self.cache_dir)
            self.model_id = f"hf:{settings['repo']}"
        _require_dir(folder)
        self._load_dir(folder)

    def _load_dir(self, folder: Path) -> None:
        tf = self._tf
        config = tf.AutoConfig.from_pretrained(str(folder), local_files_only=True)
        if config.model_type not in SUPPORTED_MODEL_TYPES:
            raise ValueError(
                f"checkpoint {str(folder)!r} is a {config.model_type!r} model; the dino backend "
                f"loads {SUPPORTED_MODEL_TYPES}"
            )
        with quiet_loading():  # transformers is imported now, so its progress bars can be muted
            model = tf.AutoModel.from_pretrained(str(folder), local_files_only=True)
        # fp32 weights whatever the file holds; on CUDA the base class halves them afterwards
        self.model = model.float().eval().to(self.device)
        self.weights_hash = weights_hash(weight_files(folder, WEIGHT_PATTERNS))
        self.transform = _transform_from(folder / "preprocessor_config.json")
        self.input_size = self.transform.input_size
        self.dim = int(config.hidden_size)

    def _forward(self, images: Any) -> Any:
        """uint8 (n, S, S, 3) numpy or device tensor -> (n, dim) unit rows, left on the device."""
        x = self.transform(images, self.device)
        with self._inference():
            return self._unit_rows(self.model(pixel_values=x).pooler_output)


def _require_dir(folder: Path) -> None:
    if not folder.is_dir():
        raise ValueError(
            f"DINOv2 checkpoint {str(folder)!r} must be a folder written by save_pretrained "
            "(config.json + model.safetensors), not a single file"
        )


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except ValueError as exc:
        raise ValueError(f"{str(path)!r} is not valid JSON ({exc}); fix or delete it") from exc
    if not isinstance(data, dict):
        raise ValueError(f"{str(path)!r} should hold a JSON object, got {type(data).__name__}")
    return data


def _transform_from(path: Path) -> ImageTransform:
    """ImageTransform from a Hugging Face image-processor config file (DINOv2 defaults if absent)."""
    return _transform_cfg(_read_json(path))


def _transform_cfg(overrides: dict[str, Any]) -> ImageTransform:
    cfg = {**DEFAULT_PREPROCESS, **overrides}
    size = cfg.get("size") or DEFAULT_PREPROCESS["size"]
    resize = max(as_hw(size))
    crop = as_hw(cfg["crop_size"]) if cfg.get("do_center_crop", True) else as_hw(size)
    return ImageTransform(
        resize=resize,
        crop=crop,
        mean=tuple(cfg["image_mean"]),
        std=tuple(cfg["image_std"]),
        interpolation=PIL_RESAMPLE.get(int(cfg.get("resample", 3)), "bicubic"),
    )
