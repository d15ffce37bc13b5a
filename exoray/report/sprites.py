"""Pack the report's tiles (thumbnails and rendered overlays) into a few sprite sheets.

A page of a thousand thumbnails then loads a handful of WebP files instead of a thousand, and the
report folder stays a handful of files on Drive. Each tile sits in a fixed cell; the index gives
its sheet, offset and size, which the page turns into a CSS background position.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

from PIL import Image

CELL = 128  # px: a tile's long side is at most this (thumbnails are made at this size)
COLUMNS = 16  # cells per sheet row: 2048 px wide
SHEET_CELLS = 256  # 16 x 16 cells: ~1 MB of WebP per sheet
SHEET_QUALITY = 80


@dataclass(frozen=True)
class SpriteSheets:
    sheets: list[bytes]  # WebP files, in order
    index: dict[str, list[int]]  # tile key -> [sheet, x, y, width, height]


def pack_sprites(tiles: dict[str, Image.Image], *, cell: int = CELL,
                 per_sheet: int = SHEET_CELLS, columns: int = COLUMNS) -> SpriteSheets:
    """Tiles (keys in display order, so a gallery's tiles share a sheet) into WebP sheets."""
    if per_sheet < 1 or columns < 1 or cell < 1:
        raise ValueError("pack_sprites: cell, per_sheet and columns must be positive")
    keys = list(tiles)
    sheets: list[bytes] = []
    index: dict[str, list[int]] = {}
    for first in range(0, len(keys), per_sheet):
        chunk = keys[first:first + per_sheet]
        rows = -(-len(chunk) // columns)
        sheet = Image.new("RGB", (min(len(chunk), columns) * cell, rows * cell), (34, 34, 34))
        for i, key in enumerate(chunk):
            tile = tiles[key]
            if max(tile.size) > cell:
                tile = tile.copy()
                tile.thumbnail((cell, cell))
            x, y = (i % columns) * cell, (i // columns) * cell
            sheet.paste(tile.convert("RGB"), (x, y))
            index[key] = [len(sheets), x, y, tile.width, tile.height]
        out = io.BytesIO()
        sheet.save(out, format="WEBP", quality=SHEET_QUALITY, method=4)
        sheets.append(out.getvalue())
    return SpriteSheets(sheets, index)
