"""``exoray report``: a static HTML report of whatever phases have run, written into BASE.

Sections read the phases' outputs through their own readers, register the images they show,
then the shown images get thumbnails (made once, kept in BASE), packed into a few sprite sheets.
The page's data goes into ``data.js`` (a ``file://`` page cannot fetch JSON in Chromium, but it
can load scripts); the folder is ``index.html`` plus a handful of assets, no CDN.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

import pyarrow as pa

from exoray import __version__
from exoray.engine.done import present_images
from exoray.image.manifest import manifest_root, read_manifest
from exoray.report.context import ReportContext
from exoray.report.sections.captions import captions_section
from exoray.report.sections.duplicates import duplicates_section
from exoray.report.sections.embedding import embedding_section
from exoray.report.sections.errors import errors_section
from exoray.report.sections.overview import overview_section
from exoray.report.sections.quality import quality_section
from exoray.report.sections.semantics import semantics_section
from exoray.report.sections.subsets import subsets_section
from exoray.report.sprites import pack_sprites
from exoray.report.thumbs import ensure_thumbnails
from exoray.storage import layout
from exoray.storage.store import Store

DEFAULT_OUT = "reports/latest"
ASSETS = ("report.js", "report.css")
SECTIONS: tuple[Callable[[ReportContext], dict[str, Any] | None], ...] = (
    overview_section, quality_section, duplicates_section, subsets_section, embedding_section,
    semantics_section, captions_section, errors_section)


@dataclass(frozen=True)
class ReportResult:
    out: str  # folder (path or URI) holding index.html
    index: str  # index.html's location
    sections: list[str]
    images_shown: int
    thumbnails_made: int
    sheets: int
    files: list[str]
    seconds: float
    timings: dict[str, float] = field(default_factory=dict)

    def __str__(self) -> str:
        return (f"report: {len(self.sections)} sections ({', '.join(self.sections)}), "
                f"{self.images_shown} images shown in {self.sheets} sprite sheets "
                f"({self.thumbnails_made} new thumbnails), {len(self.files)} files, "
                f"{self.seconds:.1f}s -> {self.index}")


def _check_positive(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return value


def build_report(base: str | os.PathLike[str] | Store, out: str | os.PathLike[str] | None = None,
                 *, max_per_gallery: int = 48, model: str | None = None,
                 clusters: int | None = None, max_map_points: int = 50_000,
                 map_thumbs: int = 1_000) -> ReportResult:
    """Write the report of ``base`` into ``out`` (default ``BASE/reports/latest``).

    ``max_per_gallery`` caps every gallery (the CSVs list everything); ``model`` is the
    embedding family or model id for clusters and the map (default clip, else any embedded);
    ``clusters`` is k (default ~sqrt(n/2), at most 24); the map draws at most
    ``max_map_points`` points with hover thumbnails for ``map_thumbs`` of them.
    """
    started = time.perf_counter()
    store = base if isinstance(base, Store) else Store(base)
    _check_positive("max_per_gallery", max_per_gallery)
    _check_positive("max_map_points", max_map_points)
    if clusters is not None:
        _check_positive("clusters", clusters)
    if isinstance(map_thumbs, bool) or not isinstance(map_thumbs, int) or map_thumbs < 0:
        raise ValueError(f"map_thumbs must be 0 or a positive integer, got {map_thumbs!r}")
    manifest = read_manifest(store)
    if manifest is None:
        raise FileNotFoundError(f"no manifest in {store.location}; run `exoray manifest "
                                f"{store.location} --images DIR` first")
    images = present_images(manifest).select(["image_id", "relpath", "fingerprint"])
    ctx = ReportContext(store, images, max_per_gallery=max_per_gallery, model=model,
                        clusters=clusters, max_map_points=max_map_points, map_thumbs=map_thumbs)
    timings: dict[str, float] = {}
    sections = []
    for make in SECTIONS:
        t0 = time.perf_counter()
        made = make(ctx)
        timings[make.__name__] = time.perf_counter() - t0
        if made is not None:
            sections.append(made)
    t0 = time.perf_counter()
    shown = pa.table({"image_id": list(ctx.shown)}).join(images, keys="image_id",
                                                          join_type="inner")
    root = manifest_root(store) or store.uri(layout.DEFAULT_IMAGES)
    thumbs, made_now = ensure_thumbnails(store, root, shown)
    timings["thumbnails"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    tiles = {}
    for image_id in ctx.shown:
        if image_id in thumbs:
            tiles[image_id] = thumbs[image_id].image()
    for key, (image_id, render) in ctx.renders.items():
        if image_id in tiles:
            tiles[key] = render(tiles[image_id])
    sprites = pack_sprites(tiles)
    timings["sprites"] = time.perf_counter() - t0
    out_store = Store(os.fspath(out)) if out is not None else Store(store.uri(DEFAULT_OUT))
    files: dict[str, bytes] = {}
    sheet_names = [f"sprites/sheet-{i:03d}.webp" for i in range(len(sprites.sheets))]
    files.update(zip(sheet_names, sprites.sheets, strict=True))
    files.update(ctx.lists)
    data = {"title": f"exoray report: {store.location}", "base": store.location,
            "created": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "version": __version__, "images": images.num_rows, "sections": sections,
            "sheets": sheet_names, "tiles": sprites.index}
    files["data.js"] = ("window.EXORAY_REPORT = "
                        + json.dumps(data, separators=(",", ":"), default=str) + ";\n").encode()
    files.update({name: js.encode() for name, js in ctx.scripts.items()})
    for name in ASSETS:
        files[name] = _asset(name)
    files["index.html"] = _asset("index.html")  # written last: a viewer sees a whole report
    t0 = time.perf_counter()
    _write(out_store, files)
    timings["write"] = time.perf_counter() - t0
    index = out_store.local_path("index.html") or out_store.uri("index.html")
    return ReportResult(out_store.location, index, [s["id"] for s in sections], len(ctx.shown),
                        made_now, len(sheet_names), sorted(files),
                        time.perf_counter() - started, timings)


def _asset(name: str) -> bytes:
    return resources.files("exoray.report").joinpath("assets", name).read_bytes()


def _write(out: Store, files: dict[str, bytes]) -> None:
    """Every file, index.html last; then what an earlier report left that this one does not
    use (older sprite sheets, lists, map data) is removed."""
    for name, data in files.items():
        out.write_bytes_atomic(data, name)
    ours = ("sprites/", "lists/", "map.js")
    for entry in out.list_files("", recursive=True):
        if entry.relpath not in files and entry.relpath.startswith(ours):
            out.delete(entry.relpath)
