"""Model backends: one small file per model, a registry, and a weights cache.

Importing this package is cheap (no torch): backends import their libraries when constructed.

    >>> from exoray.models import load_backend
    >>> clip = load_backend("clip:tiny", cache_dir="BASE/models")
    >>> clip({"image": images})["embedding"]          # uint8 (N, S, S, 3) -> float32 (N, dim)

`ModelBackend` (base.py) is the task-neutral base: chunking, device, fp16, OOM backoff and the
per-image output kinds of outputs.py. `EmbeddingBackend` (embedding.py) adds unit-length vectors.
"""

from __future__ import annotations

from typing import Any

from exoray.models.base import ModelBackend
from exoray.models.embedding import EmbeddingBackend
from exoray.models.outputs import OUTPUT_KINDS
from exoray.models.registry import available_backends, get_backend_class, register_backend

__all__ = [
    "OUTPUT_KINDS",
    "EmbeddingBackend",
    "ModelBackend",
    "available_backends",
    "describe_backend",
    "get_backend_class",
    "load_backend",
    "parse_spec",
    "prefetch_backend",
    "register_backend",
]


def parse_spec(spec: str) -> tuple[str, str | None]:
    """'clip:ViT-B-16' -> ('clip', 'ViT-B-16'); 'dino' -> ('dino', None)."""
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"model spec must be 'name' or 'name:variant', got {spec!r}")
    name, sep, variant = spec.strip().partition(":")
    if sep and not variant:
        raise ValueError(
            f"model spec {spec!r} has an empty variant; write {name!r} or {name}:VARIANT"
        )
    return name, (variant or None)


def describe_backend(spec: str, **kwargs: Any) -> dict[str, Any]:
    """`ModelBackend.describe` for 'name[:variant]': model_id, input_size, (dim,) batch size, gpu
    share... of the backend `load_backend(spec, **kwargs)` would build, without building it."""
    name, kwargs = _split(spec, kwargs)
    return get_backend_class(name).describe(**kwargs)


def prefetch_backend(spec: str, **kwargs: Any) -> None:
    """`ModelBackend.prefetch` for 'name[:variant]': weights into the cache, no model built."""
    name, kwargs = _split(spec, kwargs)
    get_backend_class(name).prefetch(**kwargs)


def load_backend(spec: str, **kwargs: Any) -> ModelBackend:
    """Construct the backend named by 'name[:variant]'; kwargs go to its constructor."""
    name, kwargs = _split(spec, kwargs)
    return get_backend_class(name)(**kwargs)


def _split(spec: str, kwargs: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    name, variant = parse_spec(spec)
    if variant is not None and kwargs.get("variant") not in (None, variant):
        raise ValueError(
            f"variant given twice: {variant!r} in spec {spec!r} and variant={kwargs['variant']!r}"
        )
    if variant is not None:
        kwargs = {**kwargs, "variant": variant}
    return name, kwargs
