"""What every report section shares: BASE, the present images, gallery caps, and the registers
of images to show (they get thumbnails), rendered tiles and exported file lists."""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from exoray.storage.store import Store

# A rendered tile (mask overlay, depth map) from the image's thumbnail: PIL image in and out.
TileRenderer = Callable[[Any], Any]


@dataclass
class ReportContext:
    store: Store
    images: pa.Table  # present images: image_id, relpath, fingerprint
    max_per_gallery: int = 48
    model: str | None = None  # embedding family for clusters and the map (None: clip, else any)
    clusters: int | None = None  # k for the clusters (None: from the collection size)
    max_map_points: int = 50_000
    map_thumbs: int = 1_000
    shown: dict[str, None] = field(default_factory=dict)  # image ids to thumbnail, in order
    renders: dict[str, tuple[str, TileRenderer]] = field(default_factory=dict)  # key -> (id, fn)
    lists: dict[str, bytes] = field(default_factory=dict)  # lists/<name>.csv -> CSV bytes
    scripts: dict[str, str] = field(default_factory=dict)  # extra data scripts, name -> JS
    _relpaths: dict[str, str] | None = None

    @property
    def relpaths(self) -> dict[str, str]:
        if self._relpaths is None:
            self._relpaths = dict(zip(self.images["image_id"].to_pylist(),
                                      self.images["relpath"].to_pylist(), strict=True))
        return self._relpaths

    def show(self, image_id: str) -> str:
        """Register ``image_id`` for a thumbnail; returns its tile key."""
        self.shown.setdefault(image_id, None)
        return image_id

    def render(self, image_id: str, kind: str, fn: TileRenderer) -> str:
        """Register a tile drawn from ``image_id``'s thumbnail (e.g. its masks); returns its key."""
        self.show(image_id)
        key = f"{image_id}#{kind}"
        self.renders[key] = (image_id, fn)
        return key

    def export(self, name: str, table: pa.Table) -> str:
        """``table`` as ``lists/<name>.csv`` (relpath first); returns the link path."""
        cols = ["relpath", *[c for c in table.column_names if c != "relpath"]]
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(cols)
        columns = [table[c].to_pylist() for c in cols]
        writer.writerows(zip(*columns, strict=True) if columns else [])
        path = f"lists/{slug(name)}.csv"
        self.lists[path] = buf.getvalue().encode("utf-8")
        return path

    def gallery(self, name: str, title: str, table: pa.Table, *, note: str = "",
                label: Callable[[dict[str, Any]], str] | None = None,
                extra: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
                csv_columns: Sequence[str] | None = None, limit: int | None = None
                ) -> dict[str, Any]:
        """A gallery block: the first ``max_per_gallery`` rows of ``table`` (image_id, relpath,
        ... in display order) as tiles, and every row exported as a CSV of image paths."""
        if "relpath" not in table.column_names:
            table = with_relpaths(self, table)
        cols = list(csv_columns) if csv_columns is not None else table.column_names
        link = self.export(name, table.select(list(dict.fromkeys(["relpath", *cols]))))
        cap = min(self.max_per_gallery, limit) if limit is not None else self.max_per_gallery
        items = []
        for row in table.slice(0, cap).to_pylist():
            item = {"t": self.show(row["image_id"]), "p": row["relpath"],
                    "l": label(row) if label else ""}
            if extra is not None:
                item.update(extra(row))
            items.append(item)
        return {"type": "gallery", "title": title, "note": note, "count": table.num_rows,
                "csv": link, "items": items}


def with_relpaths(ctx: ReportContext, table: pa.Table) -> pa.Table:
    rel = [ctx.relpaths.get(i, "") for i in table["image_id"].to_pylist()]
    return table.append_column("relpath", pa.array(rel, pa.string()))


def slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._-")[:80] or "list"


def table_block(columns: Sequence[str], rows: Sequence[Sequence[Any]], *, title: str = "",
                csv: str | None = None) -> dict[str, Any]:
    return {"type": "table", "title": title, "columns": list(columns),
            "rows": [list(r) for r in rows], "csv": csv}


def text_block(text: str) -> dict[str, Any]:
    return {"type": "text", "text": text}


def section(sid: str, title: str, intro: str, blocks: list[dict[str, Any]]) -> dict[str, Any]:
    return {"id": sid, "title": title, "intro": intro, "blocks": blocks}
