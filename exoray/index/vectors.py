"""Validation shared by every index, clustering and sampling entry point.

Everything in ``exoray.index`` assumes float32, C-contiguous, L2-normalised rows so that an
inner product *is* the cosine similarity; checking once here keeps that promise honest.
"""

from __future__ import annotations

import numpy as np

NORM_TOLERANCE = 1e-2
"""How far a row norm may stray from 1 (float16 embeddings round-trip within ~1e-3)."""

_CHECK_CHUNK = 262_144


def l2_normalize(vectors: np.ndarray) -> np.ndarray:
    """Return float32 rows scaled to unit length; all-zero rows stay zero (and fail validation)."""
    arr = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(arr, axis=-1, keepdims=True)
    return np.divide(arr, norms, out=np.zeros_like(arr), where=norms > 0)


def as_matrix(vectors: np.ndarray, *, name: str = "vectors", dim: int | None = None) -> np.ndarray:
    """Return ``vectors`` as a float32 C-contiguous (n, dim) array of unit rows, or raise.

    A single 1-D vector is accepted as one row. Copies only when dtype or layout requires it.
    """
    arr = np.asarray(vectors)
    if arr.ndim == 1:
        arr = arr[None, :]
    if arr.ndim != 2:
        raise ValueError(f"{name} must be a 2-D (n, dim) array; got shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.floating):
        raise ValueError(f"{name} must be floating point (float16/32/64); got dtype {arr.dtype}")
    if dim is not None and arr.shape[1] != dim:
        raise ValueError(f"{name} have dim {arr.shape[1]} but the index holds dim {dim}")
    if arr.shape[1] < 1:
        raise ValueError(f"{name} must have at least one column; got shape {arr.shape}")
    arr = np.ascontiguousarray(arr, dtype=np.float32)
    _check_unit_rows(arr, name)
    return arr


def _check_unit_rows(arr: np.ndarray, name: str) -> None:
    """Raise when any row is not unit length (or is NaN/inf), naming the worst row."""
    for start in range(0, len(arr), _CHECK_CHUNK):
        block = arr[start : start + _CHECK_CHUNK]
        norms = np.sqrt(np.einsum("ij,ij->i", block, block))
        bad = ~(np.abs(norms - 1.0) <= NORM_TOLERANCE)  # NaN compares False, so it is bad too
        if bad.any():
            row = int(np.argmax(bad))
            raise ValueError(
                f"{name} must be L2-normalised so that inner product = cosine; row "
                f"{start + row} has norm {float(norms[row]):.4g}. Call "
                f"exoray.index.l2_normalize(...) first (all-zero rows cannot be indexed)"
            )
