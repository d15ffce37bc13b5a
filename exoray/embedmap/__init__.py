"""The 2-D embedding map: PaCMAP (or UMAP) fitted on a sample, every other image placed beside
its nearest fitted neighbours, written into ``BASE/maps/``.

``build_map(base, "clip")`` builds it (or says it is up to date), ``read_map(base, "clip")``
returns image_id, x, y, fitted; :func:`layout_2d` is the in-memory core (no BASE).
"""

from exoray.embedmap.build import build_map, map_info, read_map
from exoray.embedmap.files import MAP_SCHEMA
from exoray.embedmap.layout2d import DEFAULT_SAMPLE, Layout, layout_2d
from exoray.embedmap.reduce import DEFAULT_METHOD, METHODS, MIN_FIT_POINTS

__all__ = [
    "DEFAULT_METHOD",
    "DEFAULT_SAMPLE",
    "MAP_SCHEMA",
    "METHODS",
    "MIN_FIT_POINTS",
    "Layout",
    "build_map",
    "layout_2d",
    "map_info",
    "read_map",
]
