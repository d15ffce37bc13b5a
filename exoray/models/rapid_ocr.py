"""OCR with PaddleOCR's PP-OCRv4 models through RapidOCR's onnxruntime build, on the CPU.

Why this engine: the detector, recogniser and orientation classifier ONNX files ship inside the
``rapidocr-onnxruntime`` wheel (15 MB), so it runs offline with nothing to download, and the
onnxruntime CPU build needs no GPU: the pipeline gives it CPU-only actors (``uses_gpu=False``)
and leaves the GPU to the torch models. PP-OCRv4's recogniser reads Chinese and English.

The model_id names the variant and the package version that bundles its files: the files change
only with a new package version, so the id changes whenever the models (or RapidOCR's pre- and
post-processing around them) may have changed; ``weights_hash`` pins the exact files.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from exoray.models.ocr_common import OCR_INPUT_SIZE, OcrBackend, RawLine
from exoray.models.registry import register_backend
from exoray.models.weights import weights_hash

PACKAGE = "rapidocr-onnxruntime"  # the pip name; the module is rapidocr_onnxruntime
MODULE = "rapidocr_onnxruntime"
DET_MAX_SIDE = 1280  # the detector's input is downscaled to this long side, never upscaled
# variant -> the package's model files (under rapidocr_onnxruntime/models/) for each stage
RAPID_VARIANTS: dict[str, dict[str, Any]] = {
    "ppocrv4": {
        "det": "ch_PP-OCRv4_det_infer.onnx",
        "rec": "ch_PP-OCRv4_rec_infer.onnx",
        "cls": "ch_ppocr_mobile_v2.0_cls_infer.onnx",
    },
}


@register_backend
class RapidOcrBackend(OcrBackend):
    """PP-OCRv4 text lines (RapidOCR, onnxruntime on the CPU)."""

    name = "rapidocr"
    uses_gpu = False  # onnxruntime's CPU build: actors ask Ray for no GPU
    default_batch_size = 4
    variants = RAPID_VARIANTS
    default_variant = "ppocrv4"
    variant_help = " (the models bundled in the rapidocr-onnxruntime package)"
    # torch too: the base class picks the device and thread count with it
    requires = ("torch", "onnxruntime", MODULE)

    @classmethod
    def _describe(cls, variant: str, checkpoint: str | None, cache_dir: Path) -> dict[str, Any]:
        _reject_checkpoint(checkpoint)
        _model_files(variant)  # fail in the driver if this package version lacks them
        return {"model_id": _model_id(variant), "input_size": OCR_INPUT_SIZE}

    @classmethod
    def _prefetch(cls, variant: str, checkpoint: str | None, cache_dir: Path) -> None:
        _reject_checkpoint(checkpoint)
        _model_files(variant)  # nothing to download: the models are in the package

    def _load(self) -> None:
        _reject_checkpoint(self.checkpoint)
        os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")  # onnxruntime >= 1.32 phones home
        self._require("onnxruntime")
        rapid = self._require(MODULE)
        files = _model_files(self.variant)
        # As many threads as torch was given (the pipeline sets that per actor); text_score=0
        # because min_confidence filters afterwards, in the same way for every engine. The
        # detector sees the picture as given (long side <= DET_MAX_SIDE): RapidOCR's default
        # raises the short side to 736 px, which turns a 1280 x 40 strip into 23,000 x 736 px
        # (an 800 x 40 strip ran 10x slower that way) and read fewer lines of a scanned page.
        self.engine = rapid.RapidOCR(
            text_score=0.0,
            det_limit_type="max",
            det_limit_side_len=DET_MAX_SIDE,
            det_model_path=str(files["det"]),
            rec_model_path=str(files["rec"]),
            cls_model_path=str(files["cls"]),
            intra_op_num_threads=max(1, int(self._torch.get_num_threads())),
        )
        self.model_id = _model_id(self.variant)
        self.weights_hash = weights_hash(files.values())
        self.input_size = OCR_INPUT_SIZE

    def _read(self, rgb: np.ndarray) -> Iterable[RawLine]:
        # RapidOCR takes arrays as OpenCV's BGR
        result, _elapsed = self.engine(np.ascontiguousarray(rgb[..., ::-1]))
        return [(box, text, score) for box, text, score in result or []]


def _reject_checkpoint(checkpoint: str | None) -> None:
    if checkpoint is not None:
        raise ValueError(
            f"the rapidocr backend runs the models bundled in the {PACKAGE} package and takes "
            f"no checkpoint (got {checkpoint!r}); choose them with the variant"
        )


def _package_dir() -> Path:
    spec = importlib.util.find_spec(MODULE)  # finds the package without importing onnxruntime
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(f"{MODULE} is not installed: pip install {PACKAGE}")
    return Path(next(iter(spec.submodule_search_locations)))


def _model_files(variant: str) -> dict[str, Path]:
    folder = _package_dir() / "models"
    files = {stage: folder / name for stage, name in RAPID_VARIANTS[variant].items()}
    missing = [p.name for p in files.values() if not p.is_file()]
    if missing:
        raise FileNotFoundError(
            f"{PACKAGE} {_version()} in {str(folder)!r} lacks {missing} of variant {variant!r}; "
            f"install the version exoray was tested with: pip install '{PACKAGE}==1.4.4'"
        )
    return files


def _version() -> str:
    try:
        return importlib.metadata.version(PACKAGE)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _model_id(variant: str) -> str:
    return f"rapidocr:{variant}@{PACKAGE}=={_version()}"
