"""The plain-class contract every model backend follows, plus the shared batching machinery.

A backend is constructed once per worker (heavy imports and weight loading happen in the
constructor) and then called on many batches. Chunking, device choice, half precision, emptying
the CUDA cache and out-of-memory backoff live here once, for every kind of output, so that each
backend only implements `_load`, `_describe` and `_forward` (one chunk of images in, one output
per image out). What an output is comes from `output_kind` (see OUTPUT_KINDS); embeddings are
one case of it (`exoray.models.embedding.EmbeddingBackend`).
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import ModuleType
from typing import Any, ClassVar

import numpy as np

from exoray.models._logs import quiet_loading
from exoray.models.outputs import OUTPUT_KINDS, check_chunk, collate
from exoray.models.weights import hub_repo_id, is_object_store, node_cache_dir, push_models


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


def check_batch_size(batch_size: Any) -> int:
    """A user-given batch size as an int >= 1 (bools are not sizes)."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)):
        raise TypeError(f"batch_size must be an int, got {batch_size!r}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    return int(batch_size)


def check_gpu_share(gpu_share: Any) -> float:
    """A user-given fraction of one GPU, 0 < x <= 1 (what each actor asks Ray for)."""
    if isinstance(gpu_share, bool) or not isinstance(gpu_share, (int, float, np.number)):
        raise TypeError(f"gpu_share must be a number, got {gpu_share!r}")
    if not 0 < gpu_share <= 1:
        raise ValueError(
            f"gpu_share must be > 0 and <= 1 (a fraction of one GPU), got {gpu_share}; "
            "0.5 lets two models share a GPU"
        )
    return float(gpu_share)


class ModelBackend:
    """Base class of all model backends; subclasses set the class attributes below.

    Subclasses implement `_load()` (sets the `required_attributes` and the model),
    `_describe(...)` (model_id and input_size without loading) and `_forward(images)` (one
    chunk of uint8 images -> a list or array with one output per image, of `output_kind`).
    """

    name: ClassVar[str] = ""
    task: ClassVar[str] = ""  # what the model does: "embed", "detect", "ocr", "caption", ...
    input_columns: ClassVar[tuple[str, ...]] = ("image",)
    # Per-image inputs passed to `_forward` when the batch has them (e.g. "image_size").
    optional_inputs: ClassVar[tuple[str, ...]] = ()
    output_columns: ClassVar[tuple[str, ...]] = ()
    output_kind: ClassVar[str] = ""  # a key of OUTPUT_KINDS
    default_batch_size: ClassVar[int] = 32
    # Fraction of one GPU an actor asks Ray for: 0.5 lets CLIP and DINO share one T4.
    default_gpu_share: ClassVar[float] = 0.5
    # fp16 autocast on CUDA inside `_inference()`; False for libraries that manage precision.
    fp16: ClassVar[bool] = True
    # Also store the weights in fp16 on CUDA (autocast then needs no per-call weight casts; norms
    # still run in fp32 under autocast). Opt-in per backend, where its model is known to be safe.
    fp16_weights: ClassVar[bool] = False
    # True when `_forward` takes a uint8 torch tensor on the device as well as numpy (the GPU
    # decode path hands over squares that never left the GPU); others get a host copy.
    tensor_input: ClassVar[bool] = False
    # False for CPU-only runtimes (e.g. onnxruntime builds): the pipeline asks Ray for no GPU.
    uses_gpu: ClassVar[bool] = True
    extra: ClassVar[str] = ""
    # Variants are data: name -> settings the backend's `_load` understands (plus optional
    # "batch_size" and "gpu_share" defaults).
    variants: ClassVar[Mapping[str, Mapping[str, Any]]] = {}
    default_variant: ClassVar[str] = ""
    variant_help: ClassVar[str] = ""  # appended to the unknown-variant error
    requires: ClassVar[tuple[str, ...]] = ("torch",)  # importable modules, checked by describe()
    required_attributes: ClassVar[tuple[str, ...]] = ("model_id", "weights_hash", "input_size")

    model_id: str
    weights_hash: str
    input_size: int
    dim: int  # output_kind "vector" only

    def __init__(
        self,
        variant: str | None = None,
        *,
        checkpoint: str | os.PathLike[str] | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
        device: str | None = None,
        batch_size: int | None = None,
        gpu_share: float | None = None,
    ) -> None:
        type(self).check_declarations()
        self.variant = self._check_variant(variant)
        self.checkpoint = os.fspath(checkpoint) if checkpoint is not None else None
        self.cache_dir = node_cache_dir(cache_dir)  # an object-store BASE/models: this node's copy
        self.batch_size, self.gpu_share = self._run_options(self.variant, batch_size, gpu_share)
        self.events: list[dict[str, Any]] = []
        self._torch = self._require("torch")
        self.device = self._pick_device(device)
        with quiet_loading():
            self._load()
        if self.fp16 and self.fp16_weights and self.device.startswith("cuda"):
            self.model.half()
        wanted = self.required_attributes + (("dim",) if self.output_kind == "vector" else ())
        missing = [a for a in wanted if not hasattr(self, a)]
        if missing:
            raise RuntimeError(f"{type(self).__name__}._load() did not set {missing}")

    # ----- hooks for subclasses -------------------------------------------------------------

    def _load(self) -> None:
        raise NotImplementedError

    def _forward(self, images: np.ndarray, **inputs: np.ndarray) -> Any:
        """One chunk (n, S, S, 3) uint8 -> n outputs of `output_kind`; may raise CUDA OOM.

        ``inputs`` holds the same chunk of each of ``optional_inputs`` the batch has, e.g.
        ``image_size``: each padded square's valid (width, height), for detectors and OCR.
        """
        raise NotImplementedError

    @classmethod
    def _describe(cls, variant: str, checkpoint: str | None, cache_dir: Path) -> dict[str, Any]:
        """model_id and input_size (plus e.g. dim) without loading the model."""
        raise NotImplementedError

    @classmethod
    def _accepts_variant(cls, variant: str) -> bool:
        """Extra variant spellings a backend allows beyond its table (checked later, on load)."""
        return False

    def _columns(self, outputs: np.ndarray) -> dict[str, np.ndarray]:
        """All images' outputs (collated by kind) -> the output columns. Override to post-process
        or to split one output into several columns."""
        return {self.output_columns[0]: outputs}

    # ----- public API -------------------------------------------------------------------------

    @classmethod
    def check_declarations(cls) -> None:
        """Fail early (at registration or construction) on a backend class declared wrongly."""
        where = f"{cls.__module__}.{cls.__qualname__}"
        if cls.output_kind not in OUTPUT_KINDS:
            raise TypeError(
                f"{where}.output_kind must be one of {sorted(OUTPUT_KINDS)}, "
                f"got {cls.output_kind!r}"
            )
        if not cls.task or not cls.output_columns or not cls.input_columns:
            raise TypeError(f"{where} must declare task, input_columns and output_columns")
        if hasattr(cls, "gpu_share"):  # a run option now: a class constant would be shadowed
            raise TypeError(f"{where}.gpu_share: declare default_gpu_share instead")
        check_batch_size(cls.default_batch_size)
        check_gpu_share(cls.default_gpu_share)

    @classmethod
    def prefetch(
        cls,
        variant: str | None = None,
        *,
        checkpoint: str | os.PathLike[str] | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
        **_run_options: Any,
    ) -> None:
        """Fetch the weights into ``cache_dir`` once, in the driver, before any worker starts.

        Workers then only copy from the cache (no concurrent downloads), and weights that cannot
        be fetched (offline, a typo in a hub id) fail at once with one line instead of after
        Ray has restarted every model actor a few times. Same arguments as the constructor.
        """
        name = cls._check_variant(variant)
        ckpt = os.fspath(checkpoint) if checkpoint is not None else None
        cache = node_cache_dir(cache_dir)
        cls._prefetch(name, ckpt, cache)
        if cache_dir is not None and is_object_store(cache_dir):
            # What the driver fetched or built goes up to BASE/models once; nodes pull it.
            push_models(cache, os.fspath(cache_dir))

    @classmethod
    def _prefetch(cls, variant: str, checkpoint: str | None, cache_dir: Path) -> None:
        """Download what ``_load`` will need (no-op for backends without downloads)."""
        return None

    @classmethod
    def describe(
        cls,
        variant: str | None = None,
        *,
        checkpoint: str | os.PathLike[str] | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
        device: str | None = None,
        batch_size: int | None = None,
        gpu_share: float | None = None,
    ) -> dict[str, Any]:
        """What a backend constructed with these arguments will report, without building it.

        For the driver: plan actor pools (input_size, gpu_share, batch size), find finished
        images by model_id, and fail on a bad variant, run option or missing library before any
        worker starts. Same arguments as the constructor. Imports no torch for table variants,
        tiny and local checkpoints; a hub checkpoint is fetched into cache_dir here (its config
        says the input size), which also spares the workers a concurrent download.
        """
        cls.check_declarations()
        name = cls._check_variant(variant)
        resolved_bs, resolved_share = cls._run_options(name, batch_size, gpu_share)
        for module in cls.requires:
            if not _importable(module):
                raise ImportError(
                    f"model backend {cls.name!r} needs the {module!r} package, which is not "
                    f"installed. Install it with: pip install 'exoray[{cls.extra or cls.name}]'"
                )
        settings = cls.variants.get(name, {})
        ckpt = os.fspath(checkpoint) if checkpoint is not None else None
        cache = node_cache_dir(cache_dir)
        info: dict[str, Any] = {
            "name": cls.name,
            "task": cls.task,
            "variant": name,
            "input_columns": cls.input_columns,
            "output_columns": cls.output_columns,
            "output_kind": cls.output_kind,
            "default_batch_size": settings.get("batch_size", cls.default_batch_size),
            "batch_size": resolved_bs,
            "default_gpu_share": settings.get("gpu_share", cls.default_gpu_share),
            "gpu_share": resolved_share,
            "extra": cls.extra,
            "uses_gpu": cls.uses_gpu,
        }
        info.update(cls._describe(name, ckpt, cache))
        return info

    @property
    def variant_settings(self) -> Mapping[str, Any]:
        return self.variants.get(self.variant, {}) if self.variant else {}

    def __call__(self, batch: Mapping[str, Any]) -> dict[str, np.ndarray]:
        """{"image": uint8 (N, S, S, 3)} -> {column: N outputs of `output_kind`}.

        The images may be a numpy array or a torch tensor (already on the device, for the GPU
        decode path); backends whose `_forward` only takes numpy need the former.
        """
        images = self._images_from_batch(batch)
        extras = {c: np.asarray(batch[c]) for c in self.optional_inputs if c in batch}
        try:
            outputs = self._map_chunks(images, extras)
        finally:
            self._empty_cache()
        return self._columns(outputs)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(model_id={getattr(self, 'model_id', '?')!r}, "
            f"device={getattr(self, 'device', '?')!r}, batch_size={self.batch_size}, "
            f"gpu_share={self.gpu_share})"
        )

    # ----- shared machinery -------------------------------------------------------------------

    def _map_chunks(self, images: np.ndarray, extras: Mapping[str, np.ndarray] | None = None
                    ) -> np.ndarray:
        """Run `_forward` over chunks of `self.batch_size`, halving it on CUDA out-of-memory.

        The smaller size is kept for the rest of the run (the next batch would OOM again), and
        each halving is recorded in `self.events`. Returns the outputs collated by kind.
        """
        oom = self._torch.cuda.OutOfMemoryError
        n = len(images)
        parts: list[Any] = []
        start = 0
        while start < n:
            size = self.batch_size
            chunk = images[start : start + size]
            inputs = {c: v[start : start + size] for c, v in (extras or {}).items()}
            try:
                out = self._forward(chunk, **inputs)
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
            where = f"{type(self).__name__}._forward"
            if isinstance(out, self._torch.Tensor):  # stays on the device: no sync per chunk
                parts.append(self._check_tensor(out, len(chunk), where))
            else:
                parts.append(check_chunk(out, len(chunk), self.output_kind, self._dim(), where))
            start += len(chunk)
        result = collate(self._to_host(parts), self.output_kind, self._dim())
        if len(result) != n:
            raise RuntimeError(f"{type(self).__name__}: {len(result)} outputs for {n} images")
        return result

    def _check_tensor(self, out: Any, n: int, where: str) -> Any:
        """A "vector" chunk returned as a device tensor: checked for shape, left on the device."""
        if self.output_kind != "vector" or tuple(out.shape) != (n, self._dim()):
            raise RuntimeError(
                f"{where} returned a tensor shaped {tuple(out.shape)} for {n} images; tensors "
                f"are for output_kind 'vector' shaped ({n}, {self._dim()})"
            )
        return out

    def _to_host(self, parts: list[Any]) -> list[Any]:
        """Device tensors among ``parts`` -> one float32 host array (a single copy and sync)."""
        torch = self._torch
        if not parts or not any(isinstance(p, torch.Tensor) for p in parts):
            return parts
        dev = [p for p in parts if isinstance(p, torch.Tensor)]
        if len(dev) != len(parts):
            raise RuntimeError(f"{type(self).__name__}._forward mixed tensors and arrays")
        return [torch.cat(dev).float().cpu().numpy()]

    def _dim(self) -> int | None:
        return self.dim if self.output_kind == "vector" else None

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
        if isinstance(images, self._torch.Tensor):
            images = self._check_image_tensor(images)
            return images if self.tensor_input else images.cpu().numpy()
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

    def _check_image_tensor(self, images: Any) -> Any:
        """A uint8 (N, H, W, 3) torch tensor (e.g. squares decoded on the GPU), used in place."""
        if images.dtype != self._torch.uint8 or images.ndim != 4 or images.shape[-1] != 3:
            raise ValueError(
                f"{self.name} backend expects uint8 images shaped (N, H, W, 3), got a "
                f"{images.dtype} tensor shaped {tuple(images.shape)}"
            )
        return images

    def _inference(self) -> contextlib.ExitStack:
        """inference_mode, plus fp16 autocast on CUDA when `fp16` (weights stay fp32, norms run
        in fp32): wrap the model call of `_forward` in it."""
        torch = self._torch
        stack = contextlib.ExitStack()
        stack.enter_context(torch.inference_mode())
        if self.fp16 and self.device.startswith("cuda"):
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
    def _run_options(cls, variant: str, batch_size: Any, gpu_share: Any) -> tuple[int, float]:
        """(batch_size, gpu_share): the given ones, else the variant's, else the class's."""
        settings = cls.variants.get(variant, {}) if variant else {}
        if batch_size is None:
            batch_size = settings.get("batch_size", cls.default_batch_size)
        if gpu_share is None:
            gpu_share = settings.get("gpu_share", cls.default_gpu_share)
        return check_batch_size(batch_size), check_gpu_share(gpu_share)

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

    @staticmethod
    def _iter_chunks(items: list[Any], size: int) -> Iterator[list[Any]]:
        for i in range(0, len(items), size):
            yield items[i : i + size]
