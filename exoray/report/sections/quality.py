"""Cheap features (Phase II): distributions, and per issue (dark, blurry, ...) the count and a
gallery of the worst examples, like cleanvision's report but from the stored features."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pyarrow as pa

from exoray.engine.readers import read_features
from exoray.explore.quality import find_issues, get_issue
from exoray.report.context import ReportContext, section, table_block, text_block

INTRO = ("Distributions of the Phase II features of every present image, then the image issues "
         "found from them (cleanvision's checks, read from the stored features: no image is "
         "decoded again), most frequent first. Each gallery shows the worst examples; its CSV "
         "lists every affected image, worst first. Thresholds: `exoray issues --help`.")
BINS = 40
# (column or derived name, title, unit, log scale)
HISTOGRAMS: tuple[tuple[str, str, str, bool], ...] = (
    ("megapixels", "size", "megapixels", True),
    ("aspect", "aspect ratio", "width / height", True),
    ("bytes", "file size", "bytes", True),
    ("brightness", "brightness", "mean luma 0..1", False),
    ("contrast", "contrast", "luma std 0..1", False),
    ("saturation", "saturation", "0..1", False),
    ("colorfulness", "colourfulness", "Hasler-Suesstrunk", False),
    ("entropy", "entropy", "bits", False),
    ("sharpness", "sharpness", "Laplacian variance", True),
    ("edge_density", "edge density", "share of edge pixels", False),
)
COLUMNS = ("width", "height", "aspect", "bytes", "brightness", "contrast", "saturation",
           "colorfulness", "entropy", "sharpness", "edge_density")


def histogram(values: np.ndarray, *, log: bool, bins: int = BINS) -> dict[str, Any] | None:
    """Counts over ``bins`` equal bins (of log10 values when ``log``); None without data."""
    values = values[np.isfinite(values)]
    if log:
        values = np.log10(values[values > 0])
    if values.size == 0:
        return None
    lo, hi = float(values.min()), float(values.max())
    if hi <= lo:
        hi = lo + 1e-6
    counts, edges = np.histogram(values, bins=bins, range=(lo, hi))
    return {"edges": [round(float(e), 6) for e in edges], "counts": counts.tolist(),
            "log": log, "n": int(values.size)}


def _column(features: pa.Table, name: str) -> np.ndarray:
    if name == "megapixels":
        return _column(features, "width") * _column(features, "height") / 1e6
    return features[name].cast(pa.float64()).fill_null(math.nan).to_numpy()


def _score_label(row: dict[str, Any]) -> str:
    return f"{row['score']:.3g}" if row["score"] is not None else ""


def quality_section(ctx: ReportContext) -> dict[str, Any] | None:
    try:
        features = read_features(ctx.store, ["image_id", *COLUMNS])
    except FileNotFoundError:
        return None
    if features.num_rows == 0:
        return section("quality", "Cheap features and issues", INTRO, [text_block(
            f"No Phase II features yet: run `exoray features {ctx.store.location}`.")])
    hists = []
    for name, title, unit, log in HISTOGRAMS:
        h = histogram(_column(features, name), log=log)
        if h is not None:
            hists.append({"title": title, "unit": unit, **h})
    blocks: list[dict[str, Any]] = [{"type": "histograms", "items": hists}]
    report = find_issues(ctx.store)
    rows = []
    galleries = []
    for s in report.summary(examples=0):
        issue = get_issue(s["issue"])
        rule = issue.rule(s["threshold"])
        rows.append([s["issue"], s["count"], f"{100 * s['share']:.1f}%", rule, s["help"]])
        if not s["count"]:
            continue
        hit = report.affected(s["issue"])
        galleries.append(ctx.gallery(
            f"issue_{s['issue']}", f"{s['issue']}: {s['count']} images", hit,
            note=f"worst first; score {rule} ({issue.unit or 'yes/no'})",
            label=_score_label if issue.threshold is not None else None))
    blocks.append(table_block(["issue", "images", "share", "rule", "what it means"], rows,
                              title=f"Issues in {report.images} images"))
    blocks += [{"type": "text", "text": n} for n in report.notes]
    blocks += galleries
    return section("quality", "Cheap features and issues", INTRO, blocks)
