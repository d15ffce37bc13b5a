"""Where things live inside BASE (see ARCHITECTURE.md). Paths are posix and relative to BASE."""

from __future__ import annotations

DEFAULT_IMAGES = "data/images"
MANIFEST = "manifests/images.parquet"
JOBS = "manifests/jobs.parquet"
FEATURES = "features/global"
DUPES = "features/dupes.parquet"
ERRORS = "logs/errors"
MODELS = "models"
INDICES = "indices"
CLUSTERS = "indices/clusters"


def embeddings_folder(model: str) -> str:
    """Output folder of one embedding backend, e.g. ``embeddings/clip``."""
    return f"embeddings/{model}"
