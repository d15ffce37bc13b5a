"""The padded-square input every Phase V/VI backend gets: the picture in the top-left corner.

The decode stage scales each image so its long side is the working size and pads it into a square
(``exoray.engine.stages.semantics``); ``image_size`` says which (width, height) is picture.
Backends crop it back with these two functions, so the contract is checked in one place.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np


def valid_sizes(images: np.ndarray, image_size: Any = None) -> list[tuple[int, int]]:
    """(width, height) of the picture inside each padded square; the whole square if None."""
    n, side_h, side_w = images.shape[:3]
    if image_size is None:
        return [(side_w, side_h)] * n
    items = list(image_size)
    if len(items) != n:
        raise ValueError(f"image_size has {len(items)} entries for {n} images")
    sizes = []
    for item in items:
        if isinstance(item, Mapping):
            item = (item["width"], item["height"])
        values = np.asarray(item).reshape(-1)
        if values.size != 2:
            raise ValueError(f"image_size entries must be (width, height), got {item!r}")
        w, h = (int(v) for v in values)
        if not (1 <= w <= side_w and 1 <= h <= side_h):
            raise ValueError(
                f"image_size {(w, h)} is outside the {side_w}x{side_h} padded square: it does not "
                "fit; it must be the (width, height) of the picture in its top-left corner"
            )
        sizes.append((w, h))
    return sizes


def crop_valid(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """The picture in the top-left ``size`` = (w, h) of a padded square, as a contiguous copy
    (OpenCV, used by both engines, wants contiguous arrays)."""
    w, h = size
    return np.ascontiguousarray(image[:h, :w])
