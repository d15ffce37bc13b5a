"""``exoray report BASE``: the static HTML report of whatever phases have run."""

from __future__ import annotations

import argparse
from typing import Any

from exoray.util.cli_types import positive_int_arg


def cmd_report(args: argparse.Namespace) -> int:
    from exoray.report import build_report
    from exoray.storage.store import Store

    if not Store(args.base).is_dir(""):
        raise FileNotFoundError(f"BASE {args.base} does not exist; check the path")
    result = build_report(args.base, args.out, max_per_gallery=args.max_per_gallery,
                          model=args.model, clusters=args.clusters,
                          max_map_points=args.max_map_points, map_thumbs=args.map_thumbs)
    print(result)
    print(f"open {result.index} in a browser (it needs no server and no network)")
    return 0


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {text}")
    return value


def add_report_commands(sub: Any, parents: list[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("report", parents=parents,
                       help="static HTML report (overview, features, duplicates, subsets, map, "
                            "Phase V/VI, errors) into BASE/reports/latest")
    p.add_argument("base", help="BASE folder or URI")
    p.add_argument("--out", help="output folder or URI (default: BASE/reports/latest)")
    p.add_argument("--max-per-gallery", type=positive_int_arg, default=48,
                   help="images shown per gallery; each gallery's CSV lists all (default: 48)")
    p.add_argument("--model", help="embedding family or model id for clusters and the map "
                                   "(default: clip if embedded, else any)")
    p.add_argument("--clusters", type=positive_int_arg,
                   help="k-means clusters (default: about sqrt(images/2), at most 24)")
    p.add_argument("--max-map-points", type=positive_int_arg, default=50_000,
                   help="points drawn on the map, a seeded sample beyond (default: 50000)")
    p.add_argument("--map-thumbs", type=_non_negative_int, default=1_000,
                   help="map points with a thumbnail on hover (default: 1000)")
    p.set_defaults(handler=cmd_report)
