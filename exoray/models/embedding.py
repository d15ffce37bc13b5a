"""Image-embedding backends (CLIP, DINOv2, ...): one unit-length float32 vector per image.

Unit rows make cosine similarity a dot product everywhere downstream (index, dedup, search), so
normalisation happens here once instead of in every backend or every consumer.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np

from exoray.models.base import ModelBackend
from exoray.models.preprocess import square_images


def l2_normalize(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length in float32 (all-zero rows stay zero instead of NaN)."""
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, np.float32(1e-12))


class EmbeddingBackend(ModelBackend):
    """Base of embedding backends: `_forward` returns (n, dim) floats, rows come back L2-normed.

    `_load()` must set `model_id`, `weights_hash`, `input_size` and `dim`.
    """

    task: ClassVar[str] = "embed"
    output_columns: ClassVar[tuple[str, ...]] = ("embedding",)
    output_kind: ClassVar[str] = "vector"

    dim: int

    def _columns(self, outputs: np.ndarray) -> dict[str, np.ndarray]:
        """{"embedding": float32 (N, dim), unit rows}."""
        return {self.output_columns[0]: l2_normalize(outputs)}

    def embed_images(self, images: np.ndarray | Sequence[Any]) -> np.ndarray:
        """Notebook convenience: a uint8 (N, S, S, 3) array, or RGB arrays / PIL images of any
        size (resized and center-cropped like the decode stage) -> (N, dim) embeddings."""
        if isinstance(images, np.ndarray) and images.ndim == 4:
            batch = images
        else:
            batch = square_images(list(images), self.input_size)
        return self({self.input_columns[0]: batch})[self.output_columns[0]]
