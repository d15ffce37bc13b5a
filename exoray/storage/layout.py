"""Where things live inside BASE (see ARCHITECTURE.md). Paths are posix and relative to BASE."""

from __future__ import annotations

import hashlib
import re

DEFAULT_IMAGES = "data/images"
MANIFEST = "manifests/images.parquet"
FEATURES = "features/global"
DUPES = "features/dupes.parquet"
ERRORS = "logs/errors"
RUNS = "logs/runs"
EVENTS = "logs/events"
LEASES = "logs/leases"
MODELS = "models"
INDICES = "indices"
CLUSTERS = "indices/clusters"
EMBEDDINGS = "embeddings"


def errors_folder(phase: str) -> str:
    """Error parts of one phase: a phase sweeps and compacts only its own folder."""
    return f"{ERRORS}/{phase}"


def slug(text: str, max_chars: int = 48) -> str:
    """A folder-safe, unique name for ``text`` (readable prefix + short hash)."""
    clean = re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._-")[:max_chars] or "x"
    return f"{clean}-{hashlib.blake2b(text.encode(), digest_size=3).hexdigest()}"


def embeddings_family(model: str) -> str:
    """Folder of one embedding family (``embeddings/clip``); one sub-folder per model id."""
    return f"{EMBEDDINGS}/{model}"


def embeddings_folder(model: str, model_id: str) -> str:
    """Output folder of one model id, e.g. ``embeddings/clip/open_clip_ViT-B-32_laion2b-1a2b3c``:
    model ids are kept apart on disk, so a second variant never mixes vector dimensions."""
    return f"{EMBEDDINGS}/{model}/{slug(model_id)}"
