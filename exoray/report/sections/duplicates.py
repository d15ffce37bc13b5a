"""Duplicates: groups with their members side by side, the one to keep, and how far each member
is from it (perceptual-hash bits); how many images are redundant."""

from __future__ import annotations

from typing import Any

import pyarrow.compute as pc

from exoray.engine.readers import read_features
from exoray.report.context import ReportContext, section, table_block, text_block

INTRO = ("Exact copies (same bytes) and near duplicates (perceptual hashes, plus embeddings when "
         "grouped with `--model`). The first image of each group is the one to keep (most "
         "pixels, then sharpest, then largest file); the others are redundant. Distances are "
         "pHash bits from the keeper (0 = same picture; the grouping allows up to "
         "`--max-distance`, 6 by default). The CSV lists every member of every group.")
MAX_MEMBERS = 8  # members shown per group (the CSV has all)


def hamming(a: str | None, b: str | None) -> int | None:
    """Bits that differ between two hex hashes; None when either is missing."""
    if not a or not b:
        return None
    return bin(int(a, 16) ^ int(b, 16)).count("1")


def duplicates_section(ctx: ReportContext) -> dict[str, Any] | None:
    from pipelines import dupes

    if not dupes.has_dupes(ctx.store):
        if not ctx.store.exists("features/global"):
            return None
        return section("duplicates", "Duplicates", INTRO, [text_block(
            f"No duplicate groups yet: run `exoray dupes {ctx.store.location}`.")])
    listing = dupes.list_duplicates(ctx.store)
    table = listing.table
    blocks: list[dict[str, Any]] = [text_block(
        f"{listing.groups} groups, {table.num_rows} images; {listing.redundant} are redundant "
        "(could go if each group's keeper stays).")]
    blocks += [text_block(n) for n in listing.notes]
    if table.num_rows == 0:
        return section("duplicates", "Duplicates", INTRO, blocks)
    hashes = read_features(ctx.store, ["image_id", "phash"])
    phash = dict(zip(hashes["image_id"].to_pylist(), hashes["phash"].to_pylist(), strict=True))
    kinds = pc.value_counts(table["kind"]).to_pylist()
    blocks.append(table_block(["kind", "images"], [[k["values"], k["counts"]] for k in kinds]))
    sizes = pc.value_counts(table["group_id"]).to_pylist()
    order = sorted(sizes, key=lambda s: (-s["counts"], s["values"]))
    shown_groups = order[:max(1, ctx.max_per_gallery // 2)]
    rows = table.to_pylist()
    by_group: dict[Any, list[dict[str, Any]]] = {}
    for r in rows:
        by_group.setdefault(r["group_id"], []).append(r)
    groups = []
    for g in shown_groups:
        members = by_group[g["values"]]
        keeper = phash.get(members[0]["image_id"])
        items = []
        for m in members[:MAX_MEMBERS]:
            d = hamming(keeper, phash.get(m["image_id"]))
            label = "keep" if m["keep"] else (f"{d} bits" if d is not None else "")
            items.append({"t": ctx.show(m["image_id"]), "p": m["relpath"],
                          "l": f"{label} · {m['width']}×{m['height']}"})
        groups.append({"title": f"group {g['values']} · {members[0]['kind']} · "
                                f"{len(members)} images", "items": items})
    link = ctx.export("duplicates", table.select(["relpath", "group_id", "kind", "keep",
                                                  "image_id", "width", "height", "bytes"]))
    redundant = table.filter(pc.invert(table["keep"]))
    blocks.append({"type": "groups", "title": f"largest {len(groups)} of {listing.groups} groups",
                   "csv": link, "count": table.num_rows, "groups": groups})
    blocks.append({"type": "text", "text": "Redundant images only (keepers left out):",
                   "csv": ctx.export("duplicates_redundant",
                                     redundant.select(["relpath", "group_id", "image_id"]))})
    return section("duplicates", "Duplicates", INTRO, blocks)
