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

    `_load()` must set `model_id`, `weights_hash`, `input_size` and `dim`. `_forward` should end
    with `self._unit_rows(features)`: the rows are normalised on the device and stay there until
    the whole batch is done (one copy to the host, no sync per chunk).
    """

    task: ClassVar[str] = "embed"
    output_columns: ClassVar[tuple[str, ...]] = ("embedding",)
    output_kind: ClassVar[str] = "vector"
    tensor_input: ClassVar[bool] = True  # ImageTransform takes numpy or device tensors

    dim: int

    def _unit_rows(self, features: Any) -> Any:
        """(n, dim) features -> float32 unit rows (zero rows stay zero): a torch tensor is
        normalised on its device, a numpy array on the host."""
        if isinstance(features, np.ndarray):
            return l2_normalize(features)
        import torch.nn.functional as F

        return F.normalize(features.float(), dim=1, eps=1e-12)

    def _columns(self, outputs: np.ndarray) -> dict[str, np.ndarray]:
        """{"embedding": float32 (N, dim), unit rows (made so by `_forward`)}."""
        return {self.output_columns[0]: outputs}

    def embed_images(self, images: np.ndarray | Sequence[Any]) -> np.ndarray:
        """Notebook convenience: a uint8 (N, S, S, 3) array, or RGB arrays / PIL images of any
        size (resized and center-cropped like the decode stage) -> (N, dim) embeddings."""
        if isinstance(images, np.ndarray) and images.ndim == 4:
            batch = images
        else:
            batch = square_images(list(images), self.input_size)
        return self({self.input_columns[0]: batch})[self.output_columns[0]]
