"""Embeddings: the 2-D map (from ``exoray map``) on a canvas, clusters with their medoids and
sample members, and outliers (the images farthest from their cluster)."""

from __future__ import annotations

import base64
import json
import math
from typing import Any

import numpy as np
import pyarrow as pa

from exoray.report.context import ReportContext, section, table_block, text_block

INTRO = ("Images placed by their embeddings. The map (`exoray map`, PaCMAP/UMAP on a sample, the "
         "rest placed by transform) puts similar images close together: hover a point for its "
         "thumbnail and path, colour it by cluster or by a flag, drag to pan, wheel to zoom. "
         "Clusters are spherical k-means on the embeddings (Phase VII's code); each shows its "
         "medoid (the member closest to the centre) and sample members. Outliers are the images "
         "farthest from their cluster's centre: unusual pictures, or mistakes.")
MEMBERS_SHOWN = 12  # sample members per cluster gallery (the CSV has all)
MAX_FLAGS = 31  # flags in the map's colour menu (bits of one uint32)


def default_k(n: int) -> int:
    """Clusters for ``n`` images: ~sqrt(n/2), between 2 and 24 (a page stays readable)."""
    return int(min(24, max(2, round(math.sqrt(n / 2)))))


def choose_family(ctx: ReportContext) -> str | None:
    from exoray.index.embeddings import embedding_sets

    families = sorted({s.model for s in embedding_sets(ctx.store)})
    if ctx.model:
        return ctx.model.split(":", 1)[0] if ctx.model.split(":", 1)[0] in families else None
    if not families:
        return None
    return "clip" if "clip" in families else families[0]


def embedding_section(ctx: ReportContext) -> dict[str, Any] | None:
    from exoray.index.cluster import spherical_kmeans
    from exoray.index.embeddings import read_current_embeddings

    family = choose_family(ctx)
    if family is None:
        if not ctx.store.exists("features/global"):
            return None
        which = ctx.model or "clip"
        return section("embeddings", "Embeddings", INTRO, [text_block(
            f"No {which} embeddings yet: run `exoray embed {ctx.store.location} --model "
            f"{which}`, then `exoray map {ctx.store.location} --model {which}`.")])
    ids, vectors, info = read_current_embeddings(ctx.store, ctx.model or family)
    blocks: list[dict[str, Any]] = [text_block(
        f"{len(ids)} images embedded with {info['model_id']}.")]
    assign: dict[str, int] = {}
    if len(ids) >= 2:
        k = min(ctx.clusters or default_k(len(ids)), len(ids))
        result = spherical_kmeans(vectors, k, seed=0)
        assign = dict(zip(ids, result.assign.tolist(), strict=True))
        blocks += _cluster_blocks(ctx, ids, result)
    blocks.insert(1, map_block(ctx, family, assign))
    return section("embeddings", "Embeddings", INTRO, blocks)


def _cluster_blocks(ctx: ReportContext, ids: list[str], result: Any) -> list[dict[str, Any]]:
    order = np.argsort(-result.sizes, kind="stable")
    medoids = [int(result.medoids[c]) for c in order if result.medoids[c] >= 0]
    rows = pa.table({"image_id": [ids[m] for m in medoids],
                     "cluster": [int(result.assign[m]) for m in medoids],
                     "size": [int(result.sizes[result.assign[m]]) for m in medoids]})
    blocks = [ctx.gallery("cluster_medoids", f"{result.k} clusters: medoids, largest first",
                          rows, note="the member closest to each cluster's centre",
                          label=lambda r: f"cluster {r['cluster']} · {r['size']}")]
    rng = np.random.default_rng(0)
    for c in order:
        members = result.members(int(c))
        if members.size == 0:
            continue
        shown = np.sort(rng.choice(members.size, size=min(MEMBERS_SHOWN, members.size),
                                   replace=False))
        ranked = np.concatenate([members[shown], np.delete(members, shown)])
        table = pa.table({"image_id": [ids[i] for i in ranked],
                          "distance": result.distance[ranked].astype(np.float64)})
        blocks.append(ctx.gallery(
            f"cluster_{int(c)}", f"cluster {int(c)}: {int(result.sizes[c])} images", table,
            note="a random sample of members; the CSV lists all of them",
            label=lambda r: f"{r['distance']:.2f}", limit=MEMBERS_SHOWN))
    far = np.argsort(-result.distance, kind="stable")
    far = far[:max(ctx.max_per_gallery, len(ids) // 100)]
    table = pa.table({"image_id": [ids[i] for i in far],
                      "cluster": result.assign[far].astype(np.int64),
                      "distance": result.distance[far].astype(np.float64)})
    blocks.append(ctx.gallery("outliers", "outliers: farthest from their cluster", table,
                              note="1 - cosine to the cluster centre, largest first",
                              label=lambda r: f"c{r['cluster']} · {r['distance']:.2f}"))
    blocks.append(table_block(["cluster", "images", "medoid"],
                              [[r["cluster"], r["size"], ctx.relpaths.get(r["image_id"], "")]
                               for r in rows.to_pylist()]))
    return blocks


def _read_map(ctx: ReportContext, family: str) -> pa.Table | None:
    try:
        from exoray.embedmap import read_map
    except ImportError:
        return None
    return read_map(ctx.store, family)


def _flag_bits(ctx: ReportContext, ids: list[str]) -> tuple[list[str], np.ndarray]:
    """Phase IV flags (else the Phase II issues) of ``ids`` as bits of a uint32 per point."""
    from exoray.report.sections.subsets import flag_table

    bits = np.zeros(len(ids), np.uint32)
    found = flag_table(ctx)
    if found is not None:
        table, names = found
        columns = {n: n for n in names}
    else:
        from exoray.explore.quality import find_issues

        try:
            table = find_issues(ctx.store).table
        except FileNotFoundError:
            return [], bits
        columns = {c[3:]: c for c in table.column_names if c.startswith("is_")}
    names = list(columns)[:MAX_FLAGS]
    pos = {i: n for n, i in enumerate(table["image_id"].to_pylist())}
    rows = np.array([pos.get(i, -1) for i in ids], np.int64)
    known = rows >= 0
    for bit, name in enumerate(names):
        values = table[columns[name]].fill_null(False).to_numpy(zero_copy_only=False)
        on = np.zeros(len(ids), bool)
        on[known] = values[rows[known]]
        bits |= on.astype(np.uint32) << np.uint32(bit)
    return names, bits


def map_block(ctx: ReportContext, family: str, assign: dict[str, int]) -> dict[str, Any]:
    """The map as a canvas block; its points go to ``map.js`` (loaded when scrolled to)."""
    table = _read_map(ctx, family)
    if table is None:
        return text_block(f"no map yet: run `exoray map {ctx.store.location} --model "
                          f"{family}`")
    ids_all = table["image_id"].to_pylist()
    keep = np.array([i in ctx.relpaths for i in ids_all], bool)
    n = int(keep.sum())
    if n == 0:
        return text_block(f"the map holds no present image; rerun `exoray map "
                          f"{ctx.store.location} --model {family}`")
    rows = np.flatnonzero(keep)
    rng = np.random.default_rng(0)
    if rows.size > ctx.max_map_points:
        rows = np.sort(rng.choice(rows, size=ctx.max_map_points, replace=False))
    ids = [ids_all[i] for i in rows]
    x = table["x"].to_numpy(zero_copy_only=False).astype(np.float64)[rows]
    y = table["y"].to_numpy(zero_copy_only=False).astype(np.float64)[rows]
    fitted = table["fitted"].to_numpy(zero_copy_only=False)[rows]
    clusters = np.array([assign.get(i, 255) for i in ids], np.uint8)
    names, bits = _flag_bits(ctx, ids)
    with_thumb = np.sort(rng.choice(len(ids), size=min(ctx.map_thumbs, len(ids)),
                                    replace=False))
    for i in with_thumb:
        ctx.show(ids[i])
    data = {
        "model": family, "count": len(ids), "total": n,
        "x": _b64(_quantise(x)), "y": _b64(_quantise(-y)),
        "cluster": _b64(clusters), "flags": _b64(bits), "flagNames": names,
        "fitted": int(fitted.sum()),
        "paths": [ctx.relpaths[i] for i in ids],
        "thumbs": {str(int(i)): ids[i] for i in with_thumb},
    }
    ctx.scripts["map.js"] = "window.EXORAY_MAP = " + json.dumps(data, separators=(",", ":")) + ";\n"
    note = (f"{len(ids)} of {n} images drawn (a seeded sample)" if len(ids) < n
            else f"{n} images")
    return {"type": "map", "script": "map.js", "count": len(ids), "total": n,
            "note": f"{note}; {int(fitted.sum())} were in the fitting sample, the rest placed by "
                    f"transform; thumbnails on hover for {len(with_thumb)} of them"}


def _quantise(values: np.ndarray) -> np.ndarray:
    lo, hi = float(np.nanmin(values)), float(np.nanmax(values))
    scale = 65535.0 / (hi - lo) if hi > lo else 0.0
    return np.nan_to_num((values - lo) * scale).round().astype(np.uint16)


def _b64(array: np.ndarray) -> str:
    return base64.b64encode(np.ascontiguousarray(array).astype(array.dtype.newbyteorder("<"))
                            .tobytes()).decode("ascii")
