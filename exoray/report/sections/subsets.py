"""Subsets (Phase IV flags): counts, the largest overlaps, and per flag the images that have it
most clearly and those furthest from it."""

from __future__ import annotations

from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from exoray.report.context import ReportContext, section, table_block, text_block

INTRO = ("Phase IV flags (`exoray stratify`): how many images each selects, which flags overlap, "
         "and per flag the images with the highest score (most clearly flagged) and the lowest "
         "(furthest from it). A flag's score is the signed distance past its threshold: above 0 "
         "means set. Every phase can run on a flag expression with `--subset`.")
MAX_OVERLAPS = 20


def flag_table(ctx: ReportContext) -> tuple[pa.Table, list[str]] | None:
    """Newest flags of present images (image_id, relpath, <flag>, <flag>_score...) and the
    flag names; None before stratify ran."""
    from exoray.engine.subsets import flag_names, latest_flags

    flags = latest_flags(ctx.store)
    if flags is None or flags.num_rows == 0:
        return None
    joined = ctx.images.join(flags, keys=["image_id", "fingerprint"], join_type="inner")
    return joined, flag_names(flags)


def subsets_section(ctx: ReportContext) -> dict[str, Any] | None:
    from exoray.explore.subsets import subsets_summary

    found = flag_table(ctx)
    if found is None:
        if not ctx.store.exists("features/global"):
            return None
        return section("subsets", "Subsets", INTRO, [text_block(
            f"No subset flags yet: run `exoray stratify {ctx.store.location}`.")])
    flags, names = found
    summary = subsets_summary(ctx.store.location)
    rows = [[f["flag"], f["true"], f["false"], f["not_computed"],
             ", ".join(f"{k} {v}" for k, v in f["evidence"].items())]
            for f in sorted(summary["flags"], key=lambda f: -f["true"])]
    blocks: list[dict[str, Any]] = [
        text_block(f"rules version {summary['rules_version']}: {summary['flagged']} of "
                   f"{summary['images']} images have flags."),
        table_block(["flag", "true", "false", "not computed", "evidence"], rows)]
    overlaps = sorted(summary["overlaps"].items(), key=lambda kv: -kv[1])[:MAX_OVERLAPS]
    if overlaps:
        blocks.append(table_block(["flags", "images with both"], [list(o) for o in overlaps],
                                  title="largest overlaps"))
    for name in sorted(names, key=lambda n: -int(pc.sum(pc.fill_null(flags[n], False)).as_py()
                                                 or 0)):
        score = f"{name}_score"
        decided = flags.filter(pc.is_valid(flags[name]))
        if decided.num_rows == 0:
            blocks.append(text_block(f"{name}: undecided for every image (its evidence has not "
                                     "been computed yet)."))
            continue
        cols = ["image_id", "relpath", score]
        chosen = decided.filter(pc.fill_null(decided[name], False)).select(cols)
        chosen = chosen.sort_by([(score, "descending"), ("relpath", "ascending")])
        label = _score_label(score)
        if chosen.num_rows:
            blocks.append(ctx.gallery(f"subset_{name}", f"{name}: {chosen.num_rows} images",
                                      chosen, note="highest score first", label=label))
        lowest = decided.select(cols).sort_by([(score, "ascending"), ("relpath", "ascending")])
        blocks.append(ctx.gallery(f"subset_{name}_lowest", f"furthest from {name}", lowest,
                                  note="lowest score first (every decided image in the CSV)",
                                  label=label, limit=max(1, ctx.max_per_gallery // 4)))
    return section("subsets", "Subsets", INTRO, blocks)


def _score_label(column: str):
    def label(row: dict[str, Any]) -> str:
        value = row.get(column)
        return f"{value:+.3g}" if value is not None else ""
    return label
