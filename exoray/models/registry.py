"""Name → backend class registry.

Built-in backends are listed by module path and imported only when asked for, so that importing
the registry (the CLI, the pipeline driver) never pays for torch, open_clip or transformers.
"""

from __future__ import annotations

import importlib
from typing import TypeVar

from exoray.models.base import ModelBackend

# name -> module that registers it on import. Later phases add their backends here.
_BUILTIN_MODULES: dict[str, str] = {
    "clip": "exoray.models.clip",
    "dino": "exoray.models.dino",
    "yolo": "exoray.models.yolo",
    "rapidocr": "exoray.models.rapid_ocr",
    "easyocr": "exoray.models.easy_ocr",
    "depth": "exoray.models.depth",
    "sam": "exoray.models.sam",
    "vlm": "exoray.models.vlm",
}

_REGISTRY: dict[str, type[ModelBackend]] = {}

B = TypeVar("B", bound=type[ModelBackend])


def register_backend(cls: B) -> B:
    """Class decorator: register a backend under its `name` class attribute.

    Registering a second, different class under a taken name raises, so two backends can never
    silently shadow each other (re-running the same module, e.g. on reload, is allowed). The
    class's declarations (task, columns, output_kind, defaults) are checked here, at import.
    """
    if not (isinstance(cls, type) and issubclass(cls, ModelBackend)):
        raise TypeError(f"@register_backend expects a ModelBackend subclass, got {cls!r}")
    name = getattr(cls, "name", "")
    if not isinstance(name, str) or not name or ":" in name:
        raise ValueError(
            f"{cls.__qualname__}.name must be a non-empty string without ':', got {name!r}"
        )
    old = _REGISTRY.get(name)
    if old is not None and (old.__module__, old.__qualname__) != (cls.__module__, cls.__qualname__):
        raise ValueError(
            f"backend name {name!r} is already registered by {old.__module__}.{old.__qualname__}; "
            f"give {cls.__module__}.{cls.__qualname__} another name"
        )
    cls.check_declarations()
    _REGISTRY[name] = cls
    return cls


def available_backends() -> list[str]:
    """Names of all known backends (built-in ones without importing them)."""
    return sorted(set(_REGISTRY) | set(_BUILTIN_MODULES))


def get_backend_class(name: str) -> type[ModelBackend]:
    """The backend class registered as `name`, importing its module on first use."""
    if name not in _REGISTRY and name in _BUILTIN_MODULES:
        importlib.import_module(_BUILTIN_MODULES[name])
        if name not in _REGISTRY:
            raise RuntimeError(
                f"module {_BUILTIN_MODULES[name]} was imported but did not register backend {name!r}"
            )
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(
            f"unknown model backend {name!r}; valid backends: {', '.join(available_backends())}"
        ) from None
