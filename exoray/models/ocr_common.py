"""What the OCR backends share: the output contract, the valid-region crop and reading order.

Each engine (rapidocr, easyocr) only turns one RGB picture into raw ``(4 points in pixels, text,
confidence)`` triples; everything users see is shaped here once, so both engines' ``lines``
columns mean the same thing and can be compared or swapped:

- the pipeline pads every picture into a gray square (``image_size`` = the picture's width and
  height in its top-left corner); OCR runs on the picture alone, because padding costs detector
  time and a gray border is not text;
- coordinates are normalised to the picture (0..1), so they do not depend on the working size;
- lines come in reading order (top to bottom, then left to right), which engines do not agree on.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, ClassVar

import numpy as np

from exoray.models.base import ModelBackend
from exoray.models.padded import crop_valid, valid_sizes

# Measured on rendered text and scikit-image's page and coffee photos: easyocr's misreads scored
# 0.13-0.45 and its right readings 0.58-1.0 (one right fragment 0.33); rapidocr's one misread
# (a texture in the coffee photo) 0.06, its lines >= 0.93. 0.5 drops the misreads.
DEFAULT_MIN_CONFIDENCE = 0.5
# Text needs resolution: in the 224-518 px squares embedders use, the body text of a photo or
# a scanned page shrinks to a few pixels and cannot be read; at 1280 px ordinary print keeps the
# 10-20 px letter height both engines' detectors and recognisers are trained on.
OCR_INPUT_SIZE = 1280
_DIGITS = 6  # 1e-6 of the picture: far below a pixel, keeps the JSON short

RawLine = tuple[Any, Any, Any]  # (4 [x, y] points in picture pixels, text, confidence)


def check_min_confidence(value: Any) -> float:
    """A user-given confidence threshold as a float in [0, 1] (bools are not thresholds)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.number)):
        raise TypeError(f"min_confidence must be a number in [0, 1], got {value!r}")
    if not 0.0 <= float(value) <= 1.0:  # also rejects NaN
        raise ValueError(
            f"min_confidence must be between 0 and 1 (the engines' confidence scale), got {value}"
        )
    return float(value)


def to_lines(raw: Iterable[RawLine], width: int, height: int,
             min_confidence: float) -> list[dict[str, Any]]:
    """Raw engine triples -> the ``lines`` structs: confident, non-empty, normalised, in order.

    Runs of whitespace become one space: easyocr writes wide gaps as several spaces, which
    would make the same words compare unequal across engines and in text search.
    """
    lines = []
    for points, text, confidence in raw:
        text, conf = " ".join(str(text).split()), float(confidence)
        if not text or not conf >= min_confidence:  # `not >=` also drops NaN scores
            continue
        quad = normalise_quad(points, width, height)
        xs, ys = quad[0::2], quad[1::2]
        lines.append({"box": [min(xs), min(ys), max(xs), max(ys)], "quad": quad,
                      "text": text, "confidence": conf})
    return reading_order(lines)


def normalise_quad(points: Any, width: int, height: int) -> list[float]:
    """4 (x, y) pixel points -> [x0, y0, ..., x3, y3] as plain floats in [0, 1] of the picture."""
    pts = np.asarray(points, dtype=np.float64).reshape(4, 2) / (float(width), float(height))
    return [round(float(v), _DIGITS) for v in np.clip(pts, 0.0, 1.0).reshape(-1)]


def reading_order(lines: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Top to bottom, then left to right; a line joins a row when its vertical centre is within
    half a line height (the taller of the line and the row's mean) of the row's mean centre.

    Engines split one printed line into several boxes and return them in their own order; row
    grouping puts the pieces of one line next to each other, left to right.
    """
    rows: list[list[dict[str, Any]]] = []
    for line in sorted(lines, key=_centre):
        if rows:
            row = rows[-1]
            row_centre = sum(map(_centre, row)) / len(row)
            row_height = sum(map(_height, row)) / len(row)
            if abs(_centre(line) - row_centre) <= 0.5 * max(_height(line), row_height):
                row.append(line)
                continue
        rows.append([line])
    return [line for row in rows for line in sorted(row, key=lambda ln: ln["box"][0])]


def _centre(line: Mapping[str, Any]) -> float:
    return (line["box"][1] + line["box"][3]) / 2


def _height(line: Mapping[str, Any]) -> float:
    return float(line["box"][3] - line["box"][1])


class OcrBackend(ModelBackend):
    """Base of the OCR backends: the shared declarations, ``min_confidence`` and ``_forward``.

    Subclasses implement ``_read(rgb)``: one picture (h, w, 3) uint8 RGB -> raw triples. The
    engines are per-image (their detectors resize each picture on its own), so ``_forward``
    loops over the chunk.
    """

    task = "ocr"
    input_columns: ClassVar[tuple[str, ...]] = ("image",)
    optional_inputs: ClassVar[tuple[str, ...]] = ("image_size",)
    output_columns: ClassVar[tuple[str, ...]] = ("lines",)
    output_kind = "structs"
    extra = "ocr"
    fp16 = False  # the engines manage their own precision
    default_batch_size = 4

    def __init__(self, variant: str | None = None, *,
                 min_confidence: float = DEFAULT_MIN_CONFIDENCE, **kwargs: Any) -> None:
        self.min_confidence = check_min_confidence(min_confidence)
        super().__init__(variant, **kwargs)

    def _read(self, rgb: np.ndarray) -> Iterable[RawLine]:
        raise NotImplementedError

    def _forward(self, images: np.ndarray, image_size: Any = None,
                 **_inputs: Any) -> list[list[dict[str, Any]]]:
        out = []
        for image, (w, h) in zip(images, valid_sizes(images, image_size), strict=True):
            raw = self._read(crop_valid(image, (w, h)))
            out.append(to_lines(raw, w, h, self.min_confidence))
        return out

