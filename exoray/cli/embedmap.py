"""CLI sub-command ``exoray map``: the 2-D embedding map the report draws."""

from __future__ import annotations

import argparse
import json
import sys

from exoray.util.cli_types import positive_int_arg


def cmd_map(args: argparse.Namespace) -> int:
    from exoray.embedmap import build_map

    def progress(line: str) -> None:
        if not args.quiet:
            print(line, file=sys.stderr if args.json else sys.stdout, flush=True)

    summary = build_map(args.base, args.model, sample=args.sample, method=args.method,
                        seed=args.seed, force=args.force, log=progress)
    if args.json:
        print(json.dumps(summary))
        return 0
    if summary["status"] == "up to date":
        print(f"{args.model}: map is up to date ({summary['count']:,} points, "
              f"{summary['method_used']}, built {summary['created']}); nothing to do "
              "(--force rebuilds)")
    else:
        print(f"{args.model}: {summary['method_used']} map of {summary['count']:,} points "
              f"({summary['fitted']:,} fitted, {summary['placed']:,} placed) in "
              f"{summary['seconds']['total']}s")
    return 0


def add_map_commands(sub: argparse._SubParsersAction, parents: list[argparse.ArgumentParser]
                     ) -> None:
    from exoray.embedmap import DEFAULT_METHOD, DEFAULT_SAMPLE, METHODS

    p = sub.add_parser(
        "map", parents=parents,
        help="2-D map of a model's embeddings (PaCMAP/UMAP on a sample, the rest placed by "
             "nearest neighbours) into BASE/maps/, for the report")
    p.add_argument("base")
    p.add_argument("--model", default="clip", help="clip, dino or clip:VARIANT (default: clip)")
    p.add_argument("--sample", type=positive_int_arg, default=DEFAULT_SAMPLE,
                   help=f"fit on at most this many embeddings (default: {DEFAULT_SAMPLE})")
    p.add_argument("--method", choices=METHODS, default=DEFAULT_METHOD,
                   help=f"2-D method (default: {DEFAULT_METHOD}, the faster one here)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    p.add_argument("--force", action="store_true",
                   help="rebuild even when the map is up to date")
    p.add_argument("--json", action="store_true", help="the map's record as JSON")
    p.set_defaults(handler=cmd_map)
