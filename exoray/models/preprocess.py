"""Batched image preprocessing on tensors (resize shortest side, center crop, normalise).

The decode stage hands every model the same uint8 square (the largest `input_size` of the run).
Each backend then resizes it to its own resolution here, on its own device, for a whole chunk at
once instead of looping PIL per image. On a square input, resize-shortest + center-crop of the
square equals resize-shortest + center-crop of the original image, so geometry matches the
models' reference preprocessing. ('squash' models such as SigLIP see a center crop instead of a
squashed full frame: the decode stage has already cropped to a square.)
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

# PIL resample codes used by Hugging Face image-processor configs.
PIL_RESAMPLE = {
    0: "nearest",
    1: "bicubic",
    2: "bilinear",
    3: "bicubic",
    4: "bilinear",
    5: "bicubic",
}
_TORCH_MODES = {"nearest": "nearest", "bilinear": "bilinear", "bicubic": "bicubic"}


@dataclass(frozen=True)
class ImageTransform:
    """Resize the shorter side to `resize`, center-crop `crop` (h, w), scale to [0,1], normalise."""

    resize: int
    crop: tuple[int, int]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str = "bicubic"

    def __post_init__(self) -> None:
        if self.interpolation not in _TORCH_MODES:
            raise ValueError(
                f"interpolation {self.interpolation!r} is not one of {sorted(_TORCH_MODES)}"
            )
        if self.resize < max(self.crop):
            raise ValueError(f"resize {self.resize} is smaller than crop {self.crop}")

    @property
    def input_size(self) -> int:
        """Side of the square the decode stage should deliver: the resize target."""
        return self.resize

    def __call__(self, images: Any, device: str) -> Any:
        """uint8 (N, H, W, 3) numpy array or torch tensor -> (N, 3, h, w) tensor on `device`.

        float16 on CUDA (half the memory traffic of the resize and normalise, the model runs
        in fp16 anyway), float32 elsewhere (CPU vectors stay what they were).
        """
        x = to_device(images, device)
        dtype = compute_dtype(x.device)
        x = resize_center_crop(
            x.permute(0, 3, 1, 2).to(dtype), self.resize, self.crop, self.interpolation
        )
        mean, std = _normalisation(self.mean, self.std, str(x.device), dtype)
        return ((x - mean) / std).contiguous()


@functools.lru_cache(maxsize=32)
def _normalisation(mean: tuple[float, ...], std: tuple[float, ...], device: str, dtype: Any
                   ) -> tuple[Any, Any]:
    """mean and std scaled to 0..255 as (1, 3, 1, 1) tensors, built once per device and dtype."""
    import torch

    m = torch.tensor(mean, device=device).view(1, 3, 1, 1) * 255.0
    s = torch.tensor(std, device=device).view(1, 3, 1, 1) * 255.0
    return m.to(dtype), s.to(dtype)


def compute_dtype(device: Any) -> Any:
    """float16 for preprocessing on CUDA, float32 elsewhere (CPU half kernels are slow)."""
    import torch

    return torch.float16 if torch.device(device).type == "cuda" else torch.float32


def to_device(images: Any, device: str) -> Any:
    """uint8 images (numpy or torch) as a torch tensor on `device`, without avoidable copies.

    A tensor already there is used as is (the GPU decode path). A host array bound for CUDA
    goes through pinned memory with a non-blocking copy, so the host can prepare the next chunk
    while the GPU still works on this one.
    """
    import torch

    if isinstance(images, torch.Tensor):
        return images.to(device, non_blocking=True)
    arr = np.ascontiguousarray(images)
    with warnings.catch_warnings():
        # A Ray object-store view is read-only; nothing here writes into it (every step below
        # makes a new tensor), so wrapping it beats copying it.
        warnings.filterwarnings("ignore", message=".*not writable.*", category=UserWarning)
        x = torch.from_numpy(arr)
    if torch.device(device).type == "cuda":
        return x.pin_memory().to(device, non_blocking=True)
    return x.to(device)


def resize_center_crop(x: Any, resize: int, crop: tuple[int, int], interpolation: str) -> Any:
    """float (N, 3, H, W) tensor in [0, 255]: shorter side -> `resize`, then center crop (h, w)."""
    import torch.nn.functional as F

    h, w = x.shape[-2:]
    scale = resize / min(h, w)
    # torchvision's Resize(int): the short side becomes `resize`, the long side is truncated
    size = (resize, int(w * scale)) if h <= w else (int(h * scale), resize)
    if (h, w) != size:
        mode = _TORCH_MODES[interpolation]
        kwargs: dict[str, Any] = {} if mode == "nearest" else {"align_corners": False}
        # antialias only matters (and is only supported) when shrinking with (bi)linear/cubic
        antialias = mode != "nearest" and scale < 1
        x = F.interpolate(x, size=size, mode=mode, antialias=antialias, **kwargs).clamp_(0, 255)
    ch, cw = crop
    if ch > size[0] or cw > size[1]:
        raise ValueError(f"crop {crop} is larger than the resized image {size}")
    top = int(round((size[0] - ch) / 2.0))
    left = int(round((size[1] - cw) / 2.0))
    return x[:, :, top : top + ch, left : left + cw]


def square_images(images: Sequence[Any], size: int) -> np.ndarray:
    """RGB images of any size (HxWx3 uint8 arrays or PIL images) -> uint8 (N, size, size, 3).

    Resize shortest side + center crop, like the decode stage, for notebook convenience.
    """
    import torch

    out = np.empty((len(images), size, size, 3), dtype=np.uint8)
    for i, img in enumerate(images):
        arr = np.asarray(img.convert("RGB")) if hasattr(img, "convert") else np.asarray(img)
        if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[-1] != 3:
            raise ValueError(
                f"image {i}: expected an RGB uint8 array (H, W, 3) or a PIL image, got "
                f"{arr.dtype} {arr.shape}"
            )
        x = torch.from_numpy(np.ascontiguousarray(arr)).permute(2, 0, 1)[None].float()
        x = resize_center_crop(x, size, (size, size), "bicubic")
        out[i] = x[0].round().permute(1, 2, 0).to(torch.uint8).numpy()
    return out


def as_hw(size: Any) -> tuple[int, int]:
    """An int, (h, w) pair or {'height','width'} / {'shortest_edge'} dict -> (h, w)."""
    if isinstance(size, dict):
        if "height" in size and "width" in size:
            return int(size["height"]), int(size["width"])
        if "shortest_edge" in size:
            return int(size["shortest_edge"]), int(size["shortest_edge"])
        raise ValueError(f"cannot read an image size from {size!r}")
    if isinstance(size, (list, tuple)):
        if len(size) != 2:
            raise ValueError(f"image size {size!r} must be an int or (height, width)")
        return int(size[0]), int(size[1])
    return int(size), int(size)
