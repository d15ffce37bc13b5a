"""Image-id lists as faiss sees them: row i of an index is ``ids[i]``, unique, non-empty str."""

from __future__ import annotations

from collections.abc import Container, Iterable

import numpy as np


def as_id_array(image_ids: Iterable[str] | np.ndarray) -> np.ndarray:
    """Image ids as a 1-D object array of non-empty str, or a ValueError naming the bad row."""
    ids = np.asarray(image_ids if isinstance(image_ids, np.ndarray) else list(image_ids))
    ids = ids.astype(object).reshape(-1) if ids.size else np.empty(0, dtype=object)
    for i, value in enumerate(ids):
        if not isinstance(value, str) or not value:
            raise ValueError(f"image_ids must be non-empty strings; row {i} is {value!r}")
    return ids


def check_unique_ids(ids: Iterable[str], existing: Container[str] = ()) -> None:
    """Raise when ``ids`` repeat among themselves or collide with ``existing`` (up to 5 named)."""
    seen: set[str] = set()
    dupes: list[str] = []
    for value in ids:
        if value in seen or value in existing:
            dupes.append(value)
            if len(dupes) >= 5:
                break
        seen.add(value)
    if dupes:
        raise ValueError(f"image_ids must be unique in an index; duplicated: {dupes}")
