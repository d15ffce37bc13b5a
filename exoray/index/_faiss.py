"""Lazy faiss import: ``import exoray.index`` must work without the optional ``index`` extra."""

from __future__ import annotations

from types import ModuleType


def require_faiss() -> ModuleType:
    """Return the faiss module, or raise an ImportError that names the pip extra to install."""
    try:
        import faiss
    except ImportError as exc:
        raise ImportError(
            "exoray.index needs faiss; install it with: pip install 'exoray[index]' "
            "(or faiss-cpu / faiss-gpu directly)"
        ) from exc
    return faiss
