"""Model squares decoded on the GPU: nvJPEG batches, with a per-image fallback to the CPU path.

On a 2-vCPU runtime beside a GPU the cores cannot decode JPEGs as fast as the GPU embeds them
(issue 13: 212 img/s on two processes against 2,663 img/s with nvJPEG). So the CPU side only reads
bytes and parses each JPEG header (format, pixel mode, EXIF orientation: microseconds), and the
GPU actor decodes whole batches with ``torchvision.io.decode_jpeg(device="cuda")``, then crops the
centre square, resizes it to ``side`` and applies the orientation on the device.

What nvJPEG does not take (PNG, WebP, CMYK JPEGs, truncated files, anything it rejects) goes
through :func:`square_crop`, the CPU path every other run uses, so a bad file becomes the same
error row as with ``--decode cpu``. The same code runs on CPU tensors (``device="cpu"``): that
is how it is tested on machines without a GPU.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from exoray.image.decode import DEFAULT_MAX_PIXELS, decode_image, read_image_size

JPEG_MAGIC = b"\xff\xd8\xff"
JPEG_EOI = b"\xff\xd9"
# Pixel modes nvJPEG turns into RGB exactly like Pillow does; CMYK/YCCK JPEGs take the CPU path.
GPU_MODES = frozenset({"RGB", "L"})
DEFAULT_GPU_BATCH = 128
# This many JPEGs refused one by one before any succeeded: the device cannot decode at all (a
# torchvision built without nvJPEG, a driver mismatch), so the actor stops trying.
GPU_DECODE_GIVE_UP = 8
_ORIENTATION_TAG = 0x0112


def square_crop(data: bytes, side: int, *, name: str, max_pixels: int) -> np.ndarray:
    """CPU path: decode ``data`` so its shorter side is ``side``, centre-crop a ``side``² square.

    Uses JPEG draft decoding (``max_side``), then OpenCV's area filter to shrink (cubic to grow).
    """
    import cv2

    w, h = read_image_size(data, name=name)
    long_needed = math.ceil(side * max(w, h) / max(1, min(w, h)))
    rgb = decode_image(data, name=name, max_side=long_needed, max_pixels=max_pixels).rgb
    hh, ww = rgb.shape[:2]
    scale = side / min(hh, ww)
    nw, nh = max(side, round(ww * scale)), max(side, round(hh * scale))
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC
    resized = cv2.resize(rgb, (nw, nh), interpolation=interp)
    top, left = (nh - side) // 2, (nw - side) // 2
    return np.ascontiguousarray(resized[top:top + side, left:left + side])


@dataclass(frozen=True)
class JpegHeader:
    """What the CPU side learns from a file's header: where to decode it, and how to turn it."""

    route: str  # "gpu": nvJPEG can decode it; "cpu": the CPU path decides (and reports errors)
    orientation: int = 1  # EXIF orientation 1-8, applied on the device after decoding
    reason: str = ""  # why a file goes to the CPU (for benchmarks and tests)


def inspect_jpeg(data: bytes, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> JpegHeader:
    """Route one file from its header alone (no pixels decoded); never raises.

    Only complete baseline/progressive RGB or greyscale JPEGs within ``max_pixels`` go to the GPU:
    anything the CPU path would reject or treat specially goes there, so errors stay identical.
    """
    from PIL import Image

    if bytes(data[:3]) != JPEG_MAGIC:
        return JpegHeader("cpu", reason="not a JPEG")
    if bytes(data).rstrip(b"\0")[-2:] != JPEG_EOI:
        return JpegHeader("cpu", reason="truncated (no end-of-image marker)")
    try:
        with Image.open(io.BytesIO(data), formats=["JPEG"]) as im:
            w, h = im.size
            mode = im.mode
            orientation = _orientation(im)
    except Exception as exc:  # noqa: BLE001 - any header problem: the CPU path classifies it
        return JpegHeader("cpu", reason=f"header: {type(exc).__name__}")
    if mode not in GPU_MODES:
        return JpegHeader("cpu", reason=f"pixel mode {mode}")
    if w * h > max_pixels:
        return JpegHeader("cpu", reason="over max_pixels")
    return JpegHeader("gpu", orientation=orientation)


def _orientation(im: Any) -> int:
    """EXIF orientation 1-8 as decode.py reads it (a damaged EXIF block means 1)."""
    try:
        value = int(im.getexif().get(_ORIENTATION_TAG, 1))
    except Exception:  # noqa: BLE001 - corrupt EXIF: documented fallback to "not rotated"
        return 1
    return value if value in range(1, 9) else 1


def orient(square: Any, orientation: int) -> Any:
    """Apply EXIF ``orientation`` to a (side, side, 3) tensor, as Pillow's exif_transpose."""
    import torch

    if orientation == 2:
        return square.flip(1)
    if orientation == 3:
        return square.flip(0).flip(1)
    if orientation == 4:
        return square.flip(0)
    if orientation == 5:
        return square.transpose(0, 1)
    if orientation == 6:
        return torch.rot90(square, -1, dims=(0, 1))
    if orientation == 7:
        return square.flip(0).flip(1).transpose(0, 1)
    if orientation == 8:
        return torch.rot90(square, 1, dims=(0, 1))
    return square


def square_on_device(chw: Any, side: int, orientation: int = 1) -> Any:
    """Decoded uint8 (3, H, W) tensor -> (side, side, 3) uint8 on its device.

    Centre square first (fewer pixels to filter), then an antialiased bilinear shrink (the GPU
    twin of OpenCV's area filter on the CPU path) or a bicubic enlargement; rounding to uint8
    makes both paths hand the models the same kind of square.
    """
    import torch.nn.functional as F

    _, h, w = chw.shape
    m = min(h, w)
    top, left = (h - m) // 2, (w - m) // 2
    x = chw[:, top:top + m, left:left + m]
    if m != side:
        shrink = m > side
        x = F.interpolate(x[None].float(), size=(side, side),
                          mode="bilinear" if shrink else "bicubic", antialias=shrink,
                          align_corners=False)[0]
        x = x.round_().clamp_(0, 255).to(chw.dtype)
    return orient(x.permute(1, 2, 0), orientation)


@dataclass
class DecodedBatch:
    """A batch's squares on the device, and what went wrong with the images that failed."""

    images: Any  # uint8 (N, side, side, 3) tensor on the device; zeros where errors[i] is set
    errors: list[Any]  # None, or an ItemError-like value (``.error``, ``.message``) per image
    gpu_decoded: int  # how many images nvJPEG decoded (the rest went the CPU path or failed)


class GpuSquareDecoder:
    """Batched JPEG decode on ``device`` (nvJPEG on CUDA) with a per-image CPU fallback.

    ``fallback(data, name)`` is the CPU path: it returns a uint8 (side, side, 3) numpy square or
    an error value (the stage's ``ItemError``), never raises; the stage builds it from
    :func:`square_crop`.
    """

    def __init__(self, side: int, device: str, fallback: Callable[[bytes, str], Any], *,
                 max_pixels: int = DEFAULT_MAX_PIXELS,
                 batch_size: int = DEFAULT_GPU_BATCH) -> None:
        import torch

        if side < 1:
            raise ValueError(f"side must be a positive number of pixels, got {side}")
        self.torch = torch
        self.side = side
        self.device = str(torch.device(device))
        self.max_pixels = max_pixels
        self.batch_size = max(1, int(batch_size))
        self.fallback = fallback
        self.events: list[dict[str, Any]] = []
        self.decoded_any = False
        self.refused = 0
        self.disabled = ""  # why the device path was given up, once it was

    def __call__(self, datas: Sequence[Any], names: Sequence[str],
                 orientations: Sequence[int] | None = None,
                 routes: Sequence[str] | None = None) -> DecodedBatch:
        """Decode every item of ``datas`` (bytes, or an error value passed through unchanged).

        ``routes``/``orientations`` come from :func:`inspect_jpeg` on the CPU side; missing, they
        are computed here.
        """
        n = len(datas)
        if routes is None or orientations is None:
            heads = [inspect_jpeg(d, max_pixels=self.max_pixels)
                     if isinstance(d, (bytes, bytearray, memoryview)) else JpegHeader("cpu")
                     for d in datas]
            routes = [h.route for h in heads]
            orientations = [h.orientation for h in heads]
        out = self.torch.zeros((n, self.side, self.side, 3), dtype=self.torch.uint8,
                               device=self.device)
        errors: list[Any] = [None] * n
        on_gpu = [i for i in range(n) if routes[i] == "gpu" and not self.disabled
                  and isinstance(datas[i], (bytes, bytearray, memoryview))]
        done = self._decode_on_device(datas, on_gpu, orientations, out)
        for i in range(n):
            if i in done:
                continue
            data = datas[i]
            if not isinstance(data, (bytes, bytearray, memoryview)):
                errors[i] = data  # a read error from the CPU side
                continue
            res = self.fallback(bytes(data), names[i])
            if isinstance(res, np.ndarray):
                out[i] = self.torch.from_numpy(res).to(self.device, non_blocking=True)
            else:
                errors[i] = res
        return DecodedBatch(out, errors, len(done))

    def _decode_on_device(self, datas: Sequence[Any], idx: list[int],
                          orientations: Sequence[int], out: Any) -> set[int]:
        """Decode ``idx`` in batches into ``out``; returns the indices that succeeded."""
        done: set[int] = set()
        for start in range(0, len(idx), self.batch_size):
            if self.disabled:
                break
            chunk = idx[start:start + self.batch_size]
            for i, chw in self._decode_chunk(datas, chunk):
                out[i] = square_on_device(chw, self.side, int(orientations[i]))
                done.add(i)
        return done

    def _decode_chunk(self, datas: Sequence[Any], chunk: list[int]) -> list[tuple[int, Any]]:
        """One nvJPEG batch; if it fails, halves (a CUDA OOM or one bad file), down to single
        images, whose failure sends them to the CPU path."""
        from torchvision.io import ImageReadMode, decode_jpeg

        torch = self.torch
        tensors = [torch.frombuffer(bytearray(datas[i]), dtype=torch.uint8) for i in chunk]
        try:
            decoded = decode_jpeg(tensors, mode=ImageReadMode.RGB, device=self.device)
        except (RuntimeError, ValueError) as exc:  # nvJPEG/libjpeg refusal or CUDA OOM
            if self.device.startswith("cuda"):
                torch.cuda.empty_cache()
            reason = f"{type(exc).__name__}: {str(exc)[:200]}"
            if len(chunk) == 1:
                self.events.append({"event": "gpu_decode_fallback", "index": chunk[0],
                                    "reason": reason})
                self._count_refusal(reason)
                return []
            half = len(chunk) // 2
            first = self._decode_chunk(datas, chunk[:half])
            if self.disabled:
                return first
            return first + self._decode_chunk(datas, chunk[half:])
        self.decoded_any = True
        return list(zip(chunk, decoded, strict=True))

    def _count_refusal(self, reason: str) -> None:
        """Give the device path up when it has refused every JPEG so far: all of them then take
        the CPU path at once instead of each costing a failed GPU attempt first."""
        self.refused += 1
        if not self.decoded_any and self.refused >= GPU_DECODE_GIVE_UP and not self.disabled:
            self.disabled = reason
            self.events.append({"event": "gpu_decode_disabled", "device": self.device,
                                "reason": f"{self.refused} JPEGs refused, none decoded: {reason}"})


def cuda_available() -> bool:
    """True when torch sees a CUDA device (False without torch)."""
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def check_decode_mode(mode: str) -> str:
    """``--decode`` value checked: cpu, gpu or auto."""
    if mode not in ("cpu", "gpu", "auto"):
        raise ValueError(f"--decode {mode!r}: use cpu, gpu or auto (gpu when CUDA is present)")
    return mode
