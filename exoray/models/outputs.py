"""Output kinds: what one backend call returns per image, checked and collated in one place.

`_forward` returns one chunk's outputs; these functions check each chunk against the kind the
backend declares (so a backend bug fails loudly where it happens, not in the Parquet writer)
and join the chunks into one column for the whole batch.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

# output_kind -> what `backend(batch)[column]` holds for a batch of N images.
OUTPUT_KINDS: dict[str, str] = {
    "vector": "float32 array (N, dim): a fixed-size vector per image (embedding, scores, a "
    "flattened small map)",
    "structs": "object array (N,) of lists of dicts: boxes, masks as RLE, text lines (a list "
    "may be empty)",
    "text": "object array (N,) of str: a caption per image",
}


def check_chunk(out: Any, n: int, kind: str, dim: int | None, where: str) -> Any:
    """One chunk's outputs checked against `kind`: n items of the right type.

    Returns a float32 (n, dim) array for "vector", else a list of n items (tuples of structs
    become lists).
    """
    if kind == "vector":
        arr = np.asarray(out)
        if arr.shape != (n, dim):
            raise RuntimeError(
                f"{where} returned shape {arr.shape} for {n} images; expected ({n}, {dim})"
            )
        return arr.astype(np.float32, copy=False)
    if isinstance(out, (str, bytes, Mapping)) or not hasattr(out, "__len__"):
        raise RuntimeError(f"{where} must return one item per image, got {type(out).__name__}")
    items = list(out)
    if len(items) != n:
        raise RuntimeError(f"{where} returned {len(items)} items for {n} images")
    for i, item in enumerate(items):
        if kind == "text":
            ok = isinstance(item, str)
        else:  # structs
            ok = isinstance(item, (list, tuple)) and all(isinstance(s, Mapping) for s in item)
        if not ok:
            raise RuntimeError(
                f"{where} item {i} is {type(item).__name__}; output_kind {kind!r} needs "
                f"{OUTPUT_KINDS[kind]}"
            )
    return [list(item) if kind == "structs" else item for item in items]


def collate(parts: list[Any], kind: str, dim: int | None) -> np.ndarray:
    """Checked chunks -> one column: float32 (N, dim), or an object array of N items."""
    if kind == "vector":
        if not parts:
            return np.zeros((0, dim or 0), dtype=np.float32)
        return np.concatenate(parts, axis=0)
    items = [item for part in parts for item in part]
    column = np.empty(len(items), dtype=object)
    for i, item in enumerate(items):  # item-wise: equal-length lists must not become 2-D
        column[i] = item
    return column
