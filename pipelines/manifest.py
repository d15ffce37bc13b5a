"""Phase I: scan the image root into BASE/manifests/images.parquet (no Ray needed)."""

from __future__ import annotations

import os
from collections.abc import Iterable

from exoray.image.manifest import ScanSummary, build_manifest
from exoray.storage.store import Store


def run(base: str | os.PathLike[str], images: str | os.PathLike[str] | None = None, *,
        extensions: str | Iterable[str] | None = None) -> ScanSummary:
    """Scan ``images`` (default: the root recorded last time, else BASE/data/images).

    ``extensions``: which file extensions to scan, e.g. ``"jpg,png"`` or ``"+fits"`` (default:
    everything the installed decoders open; ``EXORAY_EXTENSIONS`` sets the same).
    """
    store = Store(base)
    store.makedirs("manifests")
    summary = build_manifest(store, os.fspath(images) if images is not None else None,
                             extensions=extensions)
    if store.is_dir("subsets"):  # a rescan keeps the flags of unchanged images
        from pipelines.stratify import join_into_manifest

        join_into_manifest(store)
    return summary
