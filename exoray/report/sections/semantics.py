"""Phase V, where it ran: detections and OCR lines drawn over thumbnails, SAM masks as coloured
overlays, depth maps beside their images."""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from exoray.report.context import ReportContext, section, table_block

INTRO = ("Phase V outputs on the subsets they ran on (`exoray semantics --task ...`): objects "
         "and text lines are drawn as boxes on the thumbnails, masks as coloured overlays, "
         "depth (relative: brighter is nearer) beside the image. Galleries show the images "
         "with the most of each; CSVs list every image the task processed.")
MAX_BOXES = 30  # per thumbnail: more only hides the picture
# Distinct colours for mask overlays (Tableau 10).
PALETTE = np.array([[78, 121, 167], [242, 142, 43], [225, 87, 89], [118, 183, 178],
                    [89, 161, 79], [237, 201, 72], [176, 122, 161], [255, 157, 167],
                    [156, 117, 95], [186, 176, 172]], np.uint8)


def _read(ctx: ReportContext, task: str) -> pa.Table | None:
    from exoray.engine.readers import read_output
    from exoray.semantics.read import with_relpath

    try:
        table = read_output(ctx.store, task)
    except FileNotFoundError:
        return None
    return with_relpath(ctx.store, table) if table.num_rows else None


def _boxes(items: list[dict[str, Any]] | None, text: str, score: str | None
           ) -> list[list[Any]]:
    out = []
    for it in (items or [])[:MAX_BOXES]:
        label = it.get(text) or ""
        if score and it.get(score) is not None:
            label = f"{label} {it[score]:.2f}"
        out.append([round(float(v), 4) for v in it["box"]] + [label])
    return out


def detect_blocks(ctx: ReportContext) -> list[dict[str, Any]]:
    table = _read(ctx, "detect")
    if table is None:
        return []
    counts: dict[str, int] = {}
    for row in table.select(["class_counts"]).to_pylist():
        for name, n in (row["class_counts"] or []):
            counts[name] = counts.get(name, 0) + n
    top = sorted(counts.items(), key=lambda kv: -kv[1])
    ranked = table.sort_by([("object_count", "descending"), ("relpath", "ascending")])
    return [
        table_block(["class", "objects"], [list(kv) for kv in top[:30]],
                    title=f"detections: {len(table)} images, {sum(counts.values())} objects"),
        ctx.gallery("detect", "most objects", ranked,
                    note=f"boxes of {table['model_id'][0].as_py()}, most objects first",
                    label=lambda r: f"{r['object_count']} objects, {r['person_count']} people",
                    extra=lambda r: {"b": _boxes(r["objects"], "class_name", "score")},
                    csv_columns=["image_id", "object_count", "person_count", "face_count"])]


def ocr_blocks(ctx: ReportContext) -> list[dict[str, Any]]:
    table = _read(ctx, "ocr")
    if table is None:
        return []
    ranked = table.sort_by([("text_area", "descending"), ("relpath", "ascending")])
    with_text = int(pc.sum(pc.greater(table["line_count"], 0)).as_py() or 0)
    return [ctx.gallery(
        "ocr", f"text read by OCR: {with_text} of {len(table)} images have text", ranked,
        note=f"line boxes of {table['model_id'][0].as_py()}, most text first",
        label=lambda r: " / ".join((r["text"] or "").splitlines()[:3])[:120] or "(no text)",
        extra=lambda r: {"b": _boxes(r["lines"], "text", None)},
        csv_columns=["image_id", "line_count", "text_area", "text"])]


def _mask_renderer(masks: list[dict[str, Any]]):
    def render(thumb):
        from PIL import Image

        from exoray.semantics.masks import masks_to_image

        rgb = np.asarray(thumb.convert("RGB"), np.float32)
        labels = masks_to_image([m["rle"] for m in masks], size=rgb.shape[:2])
        colour = PALETTE[(labels - 1) % len(PALETTE)].astype(np.float32)
        on = (labels > 0)[..., None]
        out = np.where(on, 0.45 * rgb + 0.55 * colour, rgb)
        return Image.fromarray(out.clip(0, 255).astype(np.uint8))
    return render


def sam_blocks(ctx: ReportContext) -> list[dict[str, Any]]:
    table = _read(ctx, "sam")
    if table is None:
        return []
    ranked = table.sort_by([("mask_count", "descending"), ("relpath", "ascending")])
    return [ctx.gallery(
        "sam", f"SAM masks: {len(table)} images", ranked,
        note=f"masks of {table['model_id'][0].as_py()} over the image, most masks first",
        label=lambda r: f"{r['mask_count']} masks",
        extra=lambda r: {"t": ctx.render(r["image_id"], "masks", _mask_renderer(r["masks"]))},
        csv_columns=["image_id", "mask_count", "largest_area"])]


def colourise(depth: np.ndarray) -> np.ndarray:
    """Relative depth -> RGB uint8 (dark blue far, yellow near), normalised per image."""
    lo, hi = np.nanpercentile(depth, 2), np.nanpercentile(depth, 98)
    t = np.clip((depth - lo) / (hi - lo) if hi > lo else np.zeros_like(depth), 0, 1)
    stops = np.array([[13, 8, 135], [126, 3, 168], [204, 71, 120], [248, 149, 64],
                      [240, 249, 33]], np.float32)
    pos = t * (len(stops) - 1)
    i = np.minimum(pos.astype(np.int64), len(stops) - 2)
    f = (pos - i)[..., None]
    return (stops[i] * (1 - f) + stops[i + 1] * f).astype(np.uint8)


def _depth_renderer(row: dict[str, Any]):
    def render(thumb):
        from PIL import Image

        from exoray.models.depth import depth_map

        tile = Image.fromarray(colourise(depth_map(row)))
        return tile.resize(thumb.size, Image.BILINEAR)
    return render


def depth_blocks(ctx: ReportContext) -> list[dict[str, Any]]:
    table = _read(ctx, "depth")
    if table is None:
        return []
    ranked = table.sort_by([("near_far_ratio", "descending"), ("relpath", "ascending")])
    return [ctx.gallery(
        "depth", f"depth: {len(table)} images", ranked,
        note=f"{table['model_id'][0].as_py()}; image and its depth map side by side, largest "
             "near/far ratio first",
        label=lambda r: f"near/far {r['near_far_ratio']:.2g}",
        extra=lambda r: {"x": [ctx.render(r["image_id"], "depth", _depth_renderer(r))]},
        csv_columns=["image_id", "depth_p05", "depth_p50", "depth_p95", "near_far_ratio"])]


def semantics_section(ctx: ReportContext) -> dict[str, Any] | None:
    blocks = detect_blocks(ctx) + ocr_blocks(ctx) + sam_blocks(ctx) + depth_blocks(ctx)
    if not blocks:
        return None
    return section("semantics", "Objects, text, masks and depth", INTRO, blocks)
