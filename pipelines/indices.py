"""Phase VII: build or extend FAISS indices of the embeddings, beside the data in BASE/indices."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from exoray.index.store import build_index
from exoray.storage.store import Store


def run(base: str | os.PathLike[str], models: Sequence[str] = ("clip",), *, kind: str = "auto",
        rebuild: bool = False, seed: int = 0) -> list[dict[str, Any]]:
    """Index each model's current embeddings; a rerun only adds new ones when the kind allows."""
    store = Store(base)
    return [build_index(store, m, kind=kind, rebuild=rebuild, seed=seed) for m in models]
