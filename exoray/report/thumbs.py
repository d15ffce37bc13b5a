"""Thumbnails for the report: made once per image version, kept in BASE as a few parquet parts.

Only the images a report shows get a thumbnail (a gallery sample, the map's hover sample), so a
report over 1M images decodes a few thousand files, not the collection. Rows are keyed by
(image_id, fingerprint) and published through the commit protocol under the ``thumbs`` lease,
one part per chunk: a report killed mid-way keeps what it made, the next one reuses it, and a
changed file simply gets a new thumbnail. WebP bytes live inside the parts, never one file per
image (Drive).
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc

from exoray.engine.errors_table import image_keys
from exoray.engine.runlog import RunRecord, new_run_id, now_utc
from exoray.engine.sink import publish_rows
from exoray.engine.spec import Output, Target
from exoray.engine.stages.reading import ItemError, apply_decoder, read_image_bytes
from exoray.storage.lease import Fence, LeaseBusy, LeaseKeeper, take_lease
from exoray.storage.parts import list_parts, read_part, sweep
from exoray.storage.store import Store

THUMBS = "thumbs"  # BASE/thumbs/: parts of (image_id, fingerprint) -> WebP bytes
PHASE = "thumbs"  # lease and run-log name
THUMB_SIDE = 128  # long side in pixels: a gallery cell, sharp enough to recognise a picture
WEBP_QUALITY = 78
CHUNK_ROWS = 256  # one part per chunk: a kill costs at most this many decodes
THUMBS_SCHEMA = pa.schema([
    ("image_id", pa.string()),
    ("relpath", pa.string()),
    ("fingerprint", pa.string()),
    ("width", pa.int32()),  # of the thumbnail
    ("height", pa.int32()),
    ("webp", pa.binary()),
    ("run_id", pa.string()),
])
OUTPUT = Output("thumbs", THUMBS_SCHEMA)
TARGET = Target("thumbs", THUMBS, OUTPUT)


@dataclass(frozen=True)
class Thumb:
    width: int
    height: int
    webp: bytes

    def image(self):
        from PIL import Image

        with Image.open(io.BytesIO(self.webp)) as im:
            return im.convert("RGB")


def make_thumbnail(data: bytes, name: str, side: int = THUMB_SIDE) -> Thumb:
    """Image bytes -> a WebP thumbnail whose long side is at most ``side`` (EXIF applied);
    raises :class:`exoray.image.decode.DecodeError` for a file that cannot be decoded."""
    from PIL import Image

    from exoray.image.decode import decode_image

    rgb = decode_image(data, name=name, max_side=side).rgb
    out = io.BytesIO()
    Image.fromarray(rgb).save(out, format="WEBP", quality=WEBP_QUALITY, method=4)
    return Thumb(int(rgb.shape[1]), int(rgb.shape[0]), out.getvalue())


def read_thumbnails(store: Store, images: pa.Table) -> dict[str, Thumb]:
    """Stored thumbnails of ``images`` (image_id, fingerprint) for their current file version.

    Key columns are read first, so only parts holding a wanted image are read in full.
    """
    if images.num_rows == 0:
        return {}
    wanted = image_keys(images)
    out: dict[str, Thumb] = {}
    parts = list_parts(store, THUMBS)
    # Newest run last, so its row wins where two runs made the same thumbnail.
    for part in parts:
        keys = read_part(store, THUMBS, part, ["image_id", "fingerprint"])
        if isinstance(keys, str) or not pc.any(pc.is_in(image_keys(keys),
                                                        value_set=wanted)).as_py():
            continue
        table = read_part(store, THUMBS, part, ["image_id", "fingerprint", "width", "height",
                                                "webp"])
        if isinstance(table, str):  # corrupt: those thumbnails are simply made again
            continue
        table = table.filter(pc.is_in(image_keys(table), value_set=wanted))
        for row in table.to_pylist():
            out[row["image_id"]] = Thumb(row["width"], row["height"], row["webp"])
    return out


def _thumb_row(root: Store, row: dict[str, str], run_id: str) -> dict[str, object] | None:
    result = apply_decoder(read_image_bytes(root, row["relpath"]), row["relpath"],
                           make_thumbnail)
    if isinstance(result, ItemError):
        return None  # Phase II already records why this file cannot be read
    return {**row, "width": result.width, "height": result.height, "webp": result.webp,
            "run_id": run_id}


def ensure_thumbnails(store: Store, image_root: str, images: pa.Table, *,
                      threads: int | None = None) -> tuple[dict[str, Thumb], int]:
    """Thumbnails of ``images`` (image_id, relpath, fingerprint): stored ones read back, the
    rest made now and published. Returns (thumbnails by image_id, how many were made).

    Another process holding the ``thumbs`` lease (a second report building) does not stop this
    one: its thumbnails are then made in memory only.
    """
    images = images.select(["image_id", "relpath", "fingerprint"])
    have = read_thumbnails(store, images)
    todo = images.filter(pc.invert(pc.is_in(images["image_id"],
                                            value_set=pa.array(list(have), pa.string()))))
    if todo.num_rows == 0:
        return have, 0
    root = Store(image_root)
    run_id = new_run_id()
    try:
        take_lease(store, PHASE, run_id)
    except LeaseBusy:
        made = _make(root, todo.to_pylist(), run_id, threads)
        have.update({r["image_id"]: Thumb(r["width"], r["height"], r["webp"]) for r in made})
        return have, len(made)
    record = RunRecord(run_id=run_id, phase=PHASE, started_at=now_utc(), todo=todo.num_rows,
                       targets=[THUMBS])
    status = "failed"
    with LeaseKeeper(store, PHASE, run_id):
        sweep(store, THUMBS)
        record.record_start(store)
        fence = Fence(store, PHASE, run_id, check_orphan=False)
        try:
            rows = todo.to_pylist()
            for start in range(0, len(rows), CHUNK_ROWS):
                made = _make(root, rows[start:start + CHUNK_ROWS], run_id, threads)
                if made:
                    publish_rows(store, pa.Table.from_pylist(made, schema=THUMBS_SCHEMA),
                                 phase=PHASE, run_id=run_id, targets=[TARGET], fence=fence)
                record.processed += len(made)
                have.update({r["image_id"]: Thumb(r["width"], r["height"], r["webp"])
                             for r in made})
            status = "completed"
        finally:
            record.errors = todo.num_rows - record.processed if status == "completed" else 0
            record.record_end(store, status)
    return have, record.processed


def _make(root: Store, rows: Iterable[dict[str, str]], run_id: str,
          threads: int | None) -> list[dict[str, object]]:
    """Read and decode on threads: Drive latency overlaps, and Pillow/OpenCV release the GIL."""
    n = threads or min(8, 2 * (os.cpu_count() or 1))
    with ThreadPoolExecutor(n, thread_name_prefix="exoray-thumbs") as pool:
        made = pool.map(lambda r: _thumb_row(root, r, run_id), list(rows))
        return [m for m in made if m is not None]
