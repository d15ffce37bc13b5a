"""CLIP-family image/text embeddings through open_clip.

Every source ends up as an open_clip 'local-dir' folder (open_clip_config.json + weights +
tokenizer files, if the tokenizer is a Hugging Face one) loaded by one code path: a pretrained tag
is downloaded into `cache_dir/open_clip/<arch>--<tag>` with a config written from open_clip's own
model and pretrained tables; the `tiny` variant is built into `cache_dir/tiny-clip`; a local
folder is used as is. A bare weights file is the one exception: it needs an architecture
(`variant`), and takes that variant's preprocessing.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from exoray.models.base import checkpoint_model_id, import_or_raise
from exoray.models.embedding import EmbeddingBackend, l2_normalize
from exoray.models.preprocess import ImageTransform, as_hw
from exoray.models.registry import register_backend
from exoray.models.tiny import ensure_tiny, tiny_config
from exoray.models.weights import (
    COMPLETE_MARKER,
    download_hub_files,
    resolve_checkpoint,
    safe_name,
    stage_locally,
    weight_files,
    weights_hash,
    write_marker,
)

# variant -> open_clip architecture + pretrained tag (None: random init, for benchmarks only).
# input_size/dim restate open_clip's model configs so the driver can plan without torch
# (a test checks them against open_clip).
CLIP_VARIANTS: dict[str, dict[str, Any]] = {
    "ViT-B-32": {
        "arch": "ViT-B-32",
        "pretrained": "laion2b_s34b_b79k",
        "input_size": 224,
        "dim": 512,
    },
    "ViT-B-16": {
        "arch": "ViT-B-16",
        "pretrained": "laion2b_s34b_b88k",
        "input_size": 224,
        "dim": 512,
    },
    "ViT-L-14": {
        "arch": "ViT-L-14",
        "pretrained": "laion2b_s32b_b82k",
        "input_size": 224,
        "dim": 768,
        "batch_size": 16,
    },
    "ViT-B-16-SigLIP": {
        "arch": "ViT-B-16-SigLIP",
        "pretrained": "webli",
        "input_size": 224,
        "dim": 768,
    },
    "ViT-B-32-random": {"arch": "ViT-B-32", "pretrained": None, "input_size": 224, "dim": 512},
    "tiny": {"tiny": True},
}

# In open_clip's own order of preference (factory._find_checkpoint_in_dir).
OPEN_CLIP_WEIGHT_PATTERNS = (
    "open_clip_model.safetensors",
    "open_clip_pytorch_model.safetensors",
    "open_clip_pytorch_model.bin",
    "open_clip_pytorch_model.pth",
    "model.safetensors",
    "pytorch_model.bin",
    "pytorch_model.pth",
    "model.pth",
    "*.safetensors",
    "*.bin",
    "*.pth",
)
HF_TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "spiece.model",
    "sentencepiece.bpe.model",
    "vocab.json",
    "merges.txt",
    "vocab.txt",
)
TEXT_CHUNK = 256


def _size_dim(model_cfg: dict[str, Any]) -> tuple[int, int]:
    """(input_size, dim) from an open_clip model config."""
    size = max(as_hw(model_cfg.get("vision_cfg", {}).get("image_size", 224)))
    return size, int(model_cfg["embed_dim"])


def _require_arch(settings: dict[str, Any], checkpoint: str | None) -> str:
    arch = settings.get("arch")
    if not arch:
        raise ValueError(
            f"checkpoint {checkpoint!r} has no open_clip_config.json, so the architecture is "
            f"unknown; pass variant='ViT-B-32' (or another of {list(CLIP_VARIANTS)}) or 'ARCH/TAG'"
        )
    return arch


def _hub_weight_names(filename: str) -> tuple[str, ...]:
    """Weight file names to try for an open_clip hub entry, safetensors first."""
    if not filename:
        return ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")
    if filename.endswith((".bin", ".pth")):
        return (filename[:-4] + ".safetensors", filename)
    return (filename,)


@register_backend
class ClipBackend(EmbeddingBackend):
    """open_clip image embeddings (L2-normalised) plus `encode_text` for text search."""

    name = "clip"
    default_batch_size = 32
    default_gpu_share = 0.5
    fp16_weights = True  # open_clip's own precision="fp16" runs the same half weights
    extra = "clip"
    variants = CLIP_VARIANTS
    default_variant = "ViT-B-32"
    variant_help = "; or any 'ARCH/TAG' pair listed by open_clip.list_pretrained()"
    requires = ("torch", "open_clip")

    @classmethod
    def _accepts_variant(cls, variant: str) -> bool:
        arch, _, tag = variant.partition("/")
        return bool(arch and tag) and "/" not in tag

    # ----- what a variant is, without loading ------------------------------------------------

    @classmethod
    def _settings(cls, variant: str) -> dict[str, Any]:
        if variant in cls.variants:
            return dict(cls.variants[variant])
        arch, _, tag = variant.partition("/")
        return {"arch": arch, "pretrained": tag}

    @classmethod
    def _variant_model_id(cls, settings: dict[str, Any]) -> str:
        if settings.get("tiny"):
            return "tiny:clip"
        return f"open_clip:{settings['arch']}/{settings['pretrained'] or 'random'}"

    @classmethod
    def _resolve(cls, checkpoint: str, cache_dir: Path) -> Path:
        return resolve_checkpoint(
            checkpoint,
            cache_dir=cache_dir,
            hub_files=[("open_clip_model.safetensors", "open_clip_pytorch_model.bin")],
            hub_optional=("open_clip_config.json", *HF_TOKENIZER_FILES),
        )

    @classmethod
    def _prefetch(cls, variant: str, checkpoint: str | None, cache_dir: Path) -> None:
        settings = cls._settings(variant)
        if checkpoint is not None:
            cls._resolve(checkpoint, cache_dir)
            return
        if settings.get("tiny") or settings["pretrained"] is None:
            return
        fetcher = cls.__new__(cls)  # only the download helpers, no model
        fetcher._oc = import_or_raise("open_clip", extra="clip", backend="clip")
        fetcher.cache_dir = cache_dir
        fetcher._download_tag(settings["arch"], settings["pretrained"])

    @classmethod
    def _describe(cls, variant: str, checkpoint: str | None, cache_dir: Path) -> dict[str, Any]:
        settings = cls._settings(variant)
        if checkpoint is not None:
            path = cls._resolve(checkpoint, cache_dir)
            config = path / "open_clip_config.json"
            if path.is_dir() and config.is_file():
                size, dim = _size_dim(json.loads(config.read_text())["model_cfg"])
            else:
                size, dim = cls._arch_size_dim(settings, checkpoint)
            model_id = checkpoint_model_id(checkpoint)
        elif settings.get("tiny"):
            size, dim = _size_dim(tiny_config("clip")["model_cfg"])
            model_id = cls._variant_model_id(settings)
        else:
            size, dim = cls._arch_size_dim(settings, None)
            model_id = cls._variant_model_id(settings)
        return {"model_id": model_id, "input_size": size, "dim": dim}

    @classmethod
    def _arch_size_dim(cls, settings: dict[str, Any], checkpoint: str | None) -> tuple[int, int]:
        if "input_size" in settings and "dim" in settings:
            return settings["input_size"], settings["dim"]
        arch, tag = _require_arch(settings, checkpoint), settings.get("pretrained")
        oc = import_or_raise("open_clip", extra=cls.extra, backend=cls.name)
        model_cfg = oc.get_model_config(arch)
        if model_cfg is None:
            raise ValueError(f"unknown open_clip architecture {arch!r}; valid: {oc.list_models()}")
        if tag and checkpoint is None and not oc.get_pretrained_cfg(arch, tag):
            raise ValueError(
                f"open_clip has no pretrained tag {tag!r} for {arch!r}; valid tags: "
                f"{oc.list_pretrained_tags_by_model(arch)}"
            )
        return _size_dim(model_cfg)

    # ----- loading ----------------------------------------------------------------------------

    def _load(self) -> None:
        self._oc = self._require("open_clip")
        settings = self._settings(self.variant)
        if self.checkpoint is not None:
            self._load_checkpoint(self.checkpoint, settings)
        elif settings.get("tiny"):
            folder = stage_locally(ensure_tiny("clip", self.cache_dir), cache_dir=self.cache_dir)
            self._load_dir(folder)
        elif settings["pretrained"] is None:
            self._load_random(settings["arch"])
        else:
            arch, tag = settings["arch"], settings["pretrained"]
            folder = stage_locally(self._download_tag(arch, tag), cache_dir=self.cache_dir)
            self._load_dir(folder)
        if self.checkpoint is None:
            self.model_id = self._variant_model_id(settings)
        self._finish()

    def _load_checkpoint(self, checkpoint: str, settings: dict[str, Any]) -> None:
        path = self._resolve(checkpoint, self.cache_dir)
        self.model_id = checkpoint_model_id(checkpoint)
        if path.is_dir() and (path / "open_clip_config.json").is_file():
            self._load_dir(path)
            return
        arch = _require_arch(settings, checkpoint)
        self._load_file(self._one_weight_file(path), arch, settings.get("pretrained"))

    def _load_dir(self, folder: Path) -> None:
        """Load an open_clip 'local-dir' folder, hashing exactly the weights file loaded."""
        oc = self._oc
        ckpt = self._one_weight_file(folder)
        model = oc.create_model(f"local-dir:{folder}", load_weights=False, pretrained_text=False)
        oc.load_checkpoint(model, str(ckpt))
        self.model = model
        self.tokenizer = oc.get_tokenizer(f"local-dir:{folder}")
        self.weights_hash = weights_hash(ckpt)

    def _load_file(self, ckpt: Path, arch: str, tag: str | None) -> None:
        oc = self._oc
        model = oc.create_model(
            arch,
            pretrained=None,
            pretrained_text=False,
            force_preprocess_cfg=self._tag_preprocess(arch, tag) if tag else None,
        )
        oc.load_checkpoint(model, str(ckpt))
        self.model = model
        self.tokenizer = oc.get_tokenizer(arch, cache_dir=str(self.cache_dir / "hf-cache"))
        self.weights_hash = weights_hash(ckpt)

    def _load_random(self, arch: str) -> None:
        """Seeded random weights: for benchmarks and wiring checks, never for real embeddings."""
        oc, torch = self._oc, self._torch
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            self.model = oc.create_model(arch, pretrained=None, pretrained_text=False)
        self.tokenizer = oc.get_tokenizer(arch)
        self.weights_hash = "random"

    def _download_tag(self, arch: str, tag: str) -> Path:
        """Fetch a pretrained tag once into cache_dir as a complete open_clip local-dir folder."""
        oc = self._oc
        folder = self.cache_dir / "open_clip" / f"{safe_name(arch)}--{safe_name(tag)}"
        if (folder / COMPLETE_MARKER).is_file():
            return folder
        model_cfg = oc.get_model_config(arch)
        if model_cfg is None:
            raise ValueError(f"unknown open_clip architecture {arch!r}; valid: {oc.list_models()}")
        pcfg = oc.get_pretrained_cfg(arch, tag)
        if not pcfg:
            raise ValueError(
                f"open_clip has no pretrained tag {tag!r} for {arch!r}; valid tags: "
                f"{oc.list_pretrained_tags_by_model(arch)}"
            )
        hub = pcfg.get("hf_hub")
        if not hub:
            raise ValueError(
                f"open_clip tag {arch}/{tag} has no Hugging Face hub copy; download it yourself "
                "and pass checkpoint='/path/to/weights' with this variant"
            )
        # open_clip's convention: 'org/repo/' means the default weights file, else 'org/repo/file'
        repo, filename = (hub.rstrip("/"), "") if hub.endswith("/") else os.path.split(hub)
        download_hub_files(repo, folder, [_hub_weight_names(filename)], mark=False)
        tok_repo = model_cfg.get("text_cfg", {}).get("hf_tokenizer_name")
        if tok_repo:
            download_hub_files(tok_repo, folder, [], HF_TOKENIZER_FILES, mark=False)
        if pcfg.get("quick_gelu"):
            model_cfg["quick_gelu"] = True
        config = {"model_cfg": model_cfg, "preprocess_cfg": self._tag_preprocess(arch, tag)}
        (folder / "open_clip_config.json").write_text(json.dumps(config, indent=2))
        write_marker(folder, {"open_clip": f"{arch}/{tag}", "hf_hub": hub})
        return folder

    def _tag_preprocess(self, arch: str, tag: str) -> dict[str, Any]:
        pcfg = self._oc.get_pretrained_cfg(arch, tag) or {}
        keys = ("mean", "std", "interpolation", "resize_mode")
        return {
            k: list(pcfg[k]) if isinstance(pcfg[k], tuple) else pcfg[k] for k in keys if k in pcfg
        }

    @staticmethod
    def _one_weight_file(path: Path) -> Path:
        files = weight_files(path, OPEN_CLIP_WEIGHT_PATTERNS)
        if len(files) > 1:
            raise ValueError(
                f"several candidate weight files in {str(path)!r}: {[f.name for f in files]}; "
                "pass checkpoint= the one to load"
            )
        return files[0]

    def _finish(self) -> None:
        """Eval mode on the device, preprocessing from the model's own config, dim by probing."""
        self.model.eval().to(self.device)
        cfg = self._oc.get_model_preprocess_cfg(self.model)
        hw = as_hw(cfg.get("size", 224))
        interp = cfg.get("interpolation", "bicubic")
        self.transform = ImageTransform(
            resize=max(hw),
            crop=hw,
            mean=tuple(cfg["mean"]),
            std=tuple(cfg["std"]),
            interpolation=interp if interp in ("bilinear", "bicubic", "nearest") else "bicubic",
        )
        self.input_size = self.transform.input_size
        probe = np.zeros((1, self.input_size, self.input_size, 3), dtype=np.uint8)
        self.dim = int(self._forward(probe).shape[1])

    # ----- inference --------------------------------------------------------------------------

    def _forward(self, images: Any) -> Any:
        """uint8 (n, S, S, 3) numpy or device tensor -> (n, dim) unit rows, left on the device."""
        x = self.transform(images, self.device)
        with self._inference():
            return self._unit_rows(self.model.encode_image(x))

    def encode_text(self, texts: Sequence[str]) -> np.ndarray:
        """Texts -> float32 (n, dim) unit vectors in the same space as the image embeddings."""
        if isinstance(texts, str) or not all(isinstance(t, str) for t in texts):
            raise TypeError("encode_text expects a list of strings, e.g. ['a photo of a cat']")
        texts = list(texts)
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        parts = []
        try:
            for chunk in self._iter_chunks(texts, TEXT_CHUNK):
                tokens = self.tokenizer(chunk).to(self.device)
                with self._inference():
                    parts.append(self.model.encode_text(tokens).float().cpu().numpy())
        finally:
            self._empty_cache()
        return l2_normalize(np.concatenate(parts, axis=0))
