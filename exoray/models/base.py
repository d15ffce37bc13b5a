"""The plain-class contract every model backend follows, plus the shared batching machinery.

A backend is constructed once per worker (heavy imports and weight loading happen in the
constructor) and then called on many batches. The chunking, half precision, out-of-memory backoff
and output normalisation live here once, so each backend only implements `_load` and `_forward`
(one chunk of images in, one float array out).
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any, ClassVar

import numpy as np

from exoray.models._logs import quiet_loading
from exoray.models.preprocess import square_images
from exoray.models.weights import default_cache_dir, hub_repo_id


def import_or_raise(module: str, *, extra: str, backend: str) -> ModuleType:
    """Import a heavy optional dependency, or say which pip extra provides it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ImportError(
            f"model backend {backend!r} needs the {module!r} package, which could not be imported "
            f"({exc}). Install it with: pip install 'exoray[{extra}]'"
        ) from exc


def _importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError, AttributeError):  # e.g. sys.modules[module] is None
        return False


def checkpoint_model_id(checkpoint: str) -> str:
    """'hf:org/name' for a hub id, 'local:/abs/path' for a local checkpoint."""
    repo = None if os.path.exists(checkpoint) else hub_repo_id(checkpoint)
    return f"hf:{repo}" if repo else f"local:{Path(checkpoint).absolute()}"


def l2_normalize(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length in float32 (all-zero rows stay zero instead of NaN)."""
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, np.float32(1e-12))


class ModelBackend:
    """Base class of all model backends; subclasses set the class attributes below.

    Subclasses implement `_load()` (sets `model_id`, `weights_hash`, `dim`, `input_size` and the
    model) and `_forward(images)` (one chunk of uint8 images -> float array, one row per image).
    """

    name: ClassVar[str] = ""
    task: ClassVar[str] = "embed"
    input_columns: ClassVar[tuple[str, ...]] = ("image",)
    output_columns: ClassVar[tuple[str, ...]] = ("embedding",)
    default_batch_size: ClassVar[int] = 32
    # Fraction of one GPU an actor asks Ray for: 0.5 lets CLIP and DINO share one T4.
    gpu_share: ClassVar[float] = 0.5
    extra: ClassVar[str] = ""
    # Variants are data: name -> settings the backend's `_load` understands.
    variants: ClassVar[Mapping[str, Mapping[str, Any]]] = {}
    default_variant: ClassVar[str] = ""
    variant_help: ClassVar[str] = ""  # appended to the unknown-variant error
    requires: ClassVar[tuple[str, ...]] = ("torch",)  # importable modules, checked by describe()

    model_id: str
    weights_hash: str
    dim: int
    input_size: int

    def __init__(
        self,
        variant: str | None = None,
        *,
        checkpoint: str | os.PathLike[str] | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
        device: str | None = None,
        batch_size: int | None = None,
    ) -> None:
        self.variant = self._check_variant(variant)
        self.checkpoint = os.fspath(checkpoint) if checkpoint is not None else None
        self.cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        variant_bs = self.variant_settings.get("batch_size", self.default_batch_size)
        self.batch_size = self._check_batch_size(
            batch_size if batch_size is not None else variant_bs
        )
        self.events: list[dict[str, Any]] = []
        self._torch = self._require("torch")
        self.device = self._pick_device(device)
        with quiet_loading():
            self._load()
        missing = [
            a for a in ("model_id", "weights_hash", "dim", "input_size") if not hasattr(self, a)
        ]
        if missing:
            raise RuntimeError(f"{type(self).__name__}._load() did not set {missing}")

    # ----- hooks for subclasses -------------------------------------------------------------

    def _load(self) -> None:
        raise NotImplementedError

    def _forward(self, images: np.ndarray) -> np.ndarray:
        """One chunk (n, S, S, 3) uint8 -> (n, dim) float array; may raise CUDA OOM."""
        raise NotImplementedError

    @classmethod
    def _describe(cls, variant: str, checkpoint: str | None, cache_dir: Path) -> dict[str, Any]:
        """model_id, input_size and dim (None if unknown) without loading the model."""
        raise NotImplementedError

    @classmethod
    def _accepts_variant(cls, variant: str) -> bool:
        """Extra variant spellings a backend allows beyond its table (checked later, on load)."""
        return False

    # ----- public API -------------------------------------------------------------------------

    @classmethod
    def describe(
        cls,
        variant: str | None = None,
        *,
        checkpoint: str | os.PathLike[str] | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
        device: str | None = None,
        batch_size: int | None = None,
    ) -> dict[str, Any]:
        """What a backend constructed with these arguments will report, without building it.

        For the driver: plan actor pools (input_size, gpu_share, batch size), find finished
        images by model_id, and fail on a bad variant or a missing library before any worker
        starts. Same arguments as the constructor. Imports no torch for table variants, tiny
        and local checkpoints; a hub checkpoint is fetched into cache_dir here (its config says
        the input size), which also spares the workers a concurrent download.
        """
        name = cls._check_variant(variant)
        for module in cls.requires:
            if not _importable(module):
                raise ImportError(
                    f"model backend {cls.name!r} needs the {module!r} package, which is not "
                    f"installed. Install it with: pip install 'exoray[{cls.extra or cls.name}]'"
                )
        settings = cls.variants.get(name, {})
        default_bs = settings.get("batch_size", cls.default_batch_size)
        ckpt = os.fspath(checkpoint) if checkpoint is not None else None
        cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        info: dict[str, Any] = {
            "name": cls.name,
            "task": cls.task,
            "variant": name,
            "input_columns": cls.input_columns,
            "output_columns": cls.output_columns,
            "default_batch_size": default_bs,
            "batch_size": batch_size if batch_size is not None else default_bs,
            "gpu_share": cls.gpu_share,
            "extra": cls.extra,
        }
        info.update(cls._describe(name, ckpt, cache))
        return info

    @property
    def variant_settings(self) -> Mapping[str, Any]:
        return self.variants.get(self.variant, {}) if self.variant else {}

    def __call__(self, batch: Mapping[str, Any]) -> dict[str, np.ndarray]:
        """{"image": uint8 (N, S, S, 3)} -> {"embedding": float32 (N, dim), unit rows}."""
        images = self._images_from_batch(batch)
        try:
            out = self._map_chunks(images)
        finally:
            self._empty_cache()
        return {self.output_columns[0]: l2_normalize(out)}

    def embed_images(self, images: np.ndarray | Sequence[Any]) -> np.ndarray:
        """Notebook convenience: a uint8 (N, S, S, 3) array, or RGB arrays / PIL images of any
        size (resized and center-cropped like the decode stage) -> (N, dim) embeddings."""
        if isinstance(images, np.ndarray) and images.ndim == 4:
            batch = images
        else:
            batch = square_images(list(images), self.input_size)
        return self({self.input_columns[0]: batch})[self.output_columns[0]]

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(model_id={getattr(self, 'model_id', '?')!r}, "
            f"device={getattr(self, 'device', '?')!r}, batch_size={self.batch_size})"
        )

    # ----- shared machinery -------------------------------------------------------------------

    def _map_chunks(self, images: np.ndarray) -> np.ndarray:
        """Run `_forward` over chunks of `self.batch_size`, halving it on CUDA out-of-memory.

        The smaller size is kept for the rest of the run (the next batch would OOM again), and
        each halving is recorded in `self.events`.
        """
        oom = self._torch.cuda.OutOfMemoryError
        n = len(images)
        if n == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        parts: list[np.ndarray] = []
        start = 0
        while start < n:
            size = self.batch_size
            chunk = images[start : start + size]
            try:
                out = self._forward(chunk)
            except oom as exc:
                self._empty_cache()
                if size <= 1:
                    raise oom(
                        f"{self.name} backend ({self.model_id}) ran out of GPU memory on a single "
                        f"{tuple(chunk.shape[1:])} image on {self.device}; give it more GPU memory "
                        "(raise its gpu_share so fewer models share the GPU) or use device='cpu'"
                    ) from exc
                new = max(1, size // 2)
                self.batch_size = new
                self.events.append(
                    {
                        "event": "oom_backoff",
                        "backend": self.name,
                        "model_id": self.model_id,
                        "from": size,
                        "to": new,
                    }
                )
                continue
            out = np.asarray(out)
            if out.ndim != 2 or out.shape[0] != len(chunk):
                raise RuntimeError(
                    f"{type(self).__name__}._forward returned shape {out.shape} for "
                    f"{len(chunk)} images; expected ({len(chunk)}, {self.dim})"
                )
            parts.append(out)
            start += len(chunk)
        return np.concatenate(parts, axis=0)

    def _images_from_batch(self, batch: Mapping[str, Any]) -> np.ndarray:
        if not isinstance(batch, Mapping):
            raise TypeError(
                f"{self.name} backend expects a dict of columns, got {type(batch).__name__}"
            )
        missing = [c for c in self.input_columns if c not in batch]
        if missing:
            raise ValueError(
                f"{self.name} backend needs columns {list(self.input_columns)}; batch is missing "
                f"{missing} (it has {sorted(batch)})"
            )
        images = batch[self.input_columns[0]]
        if isinstance(images, (list, tuple)) or (
            isinstance(images, np.ndarray) and images.dtype == object
        ):
            try:
                images = np.stack(list(images))
            except ValueError as exc:
                raise ValueError(
                    f"{self.name} backend: images in one batch must share one shape; the decode "
                    f"stage should resize them to a {self.input_size}px square ({exc})"
                ) from exc
        images = np.asarray(images)
        if images.dtype != np.uint8:
            raise TypeError(
                f"{self.name} backend expects uint8 RGB images, got dtype {images.dtype}; "
                "pass the decode stage's output unchanged"
            )
        if images.ndim != 4 or images.shape[-1] != 3:
            raise ValueError(
                f"{self.name} backend expects images shaped (N, H, W, 3), got {images.shape}"
            )
        return images

    def _inference(self) -> contextlib.ExitStack:
        """inference_mode, plus fp16 autocast on CUDA (weights stay fp32, norms run in fp32)."""
        torch = self._torch
        stack = contextlib.ExitStack()
        stack.enter_context(torch.inference_mode())
        if self.device.startswith("cuda"):
            stack.enter_context(torch.autocast(device_type="cuda", dtype=torch.float16))
        return stack

    def _empty_cache(self) -> None:
        if self.device.startswith("cuda"):
            self._torch.cuda.empty_cache()

    def _require(self, module: str) -> ModuleType:
        return import_or_raise(module, extra=self.extra or self.name, backend=self.name)

    def _pick_device(self, device: str | None) -> str:
        torch = self._torch
        if device is None:
            return "cuda" if torch.cuda.is_available() else "cpu"
        try:
            dev = torch.device(device)
        except (RuntimeError, TypeError) as exc:
            raise ValueError(
                f"device {device!r} is not a torch device; use 'cpu', 'cuda' or 'cuda:N'"
            ) from exc
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(
                f"device {device!r} requested but torch.cuda.is_available() is False; "
                "pass device='cpu' or device=None"
            )
        return str(dev)

    @classmethod
    def _check_variant(cls, variant: str | None) -> str:
        if variant is None or variant == "":
            return cls.default_variant
        if not isinstance(variant, str):
            raise TypeError(f"variant must be a string, got {type(variant).__name__}")
        if variant in cls.variants or cls._accepts_variant(variant):
            return variant
        raise ValueError(
            f"unknown variant {variant!r} for model backend {cls.name!r}; "
            f"valid variants: {', '.join(cls.variants)}{cls.variant_help}"
        )

    def _check_batch_size(self, batch_size: Any) -> int:
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)):
            raise TypeError(f"batch_size must be an int, got {batch_size!r}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        return int(batch_size)

    @staticmethod
    def _iter_chunks(items: list[Any], size: int) -> Iterator[list[Any]]:
        for i in range(0, len(items), size):
            yield items[i : i + size]
