"""The ``exoray`` command line: one sub-command per phase plus status, dupes, synth and demo."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Callable, Sequence

from exoray import __version__

Handler = Callable[[argparse.Namespace], int]
DEFAULT_DEMO_BASE = "demo_base"


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be >= 1")
    return value


# -- handlers -------------------------------------------------------------------------------------
def cmd_manifest(args: argparse.Namespace) -> int:
    from pipelines import manifest

    print(manifest.run(args.base, images=args.images))
    return 0


def cmd_features(args: argparse.Namespace) -> int:
    from pipelines import features

    result = features.run(args.base, retry_errors=args.retry_errors, part_rows=args.part_rows,
                          batch_size=args.batch_size, max_pixels=args.max_pixels,
                          show_progress=not args.quiet)
    print(result)
    return 0


def cmd_dupes(args: argparse.Namespace) -> int:
    from pipelines import dupes

    summary = dupes.run(args.base, max_distance=args.max_distance, model=args.model,
                        threshold=args.threshold)
    print(json.dumps(summary, indent=2) if args.json else dupes.format_summary(summary))
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from exoray.engine.status import collect_status, format_status

    st = collect_status(args.base)
    print(st.to_json() if args.json else format_status(st))
    return 0


def cmd_errors(args: argparse.Namespace) -> int:
    from exoray.engine.errors_table import read_errors
    from exoray.storage.store import Store

    table = read_errors(Store(args.base), args.phase)
    rows = table.select(["phase", "relpath", "error", "message", "run_id"]).to_pylist()
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    for r in rows:
        print(f"{r['phase']:<9} {r['error']:<11} {r['message']}")
    print(f"{len(rows)} error rows" + (f" for phase {args.phase}" if args.phase else ""))
    return 0


def cmd_synth(args: argparse.Namespace) -> int:
    from exoray.dev.synth import make_image_set

    truth = make_image_set(args.dir, n=args.n, seed=args.seed, corrupt=args.corrupt,
                           max_megapixels=args.max_megapixels)
    print(f"wrote {len(truth['images'])} files with ground truth to {os.path.join(args.dir, 'truth.json')}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from exoray.dev.demo import run_demo

    run_demo(args.base, n=args.n, seed=args.seed)
    return 0


# -- parser ---------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="exoray", description="Explore a large image collection: resumable Ray Data phases.")
    parser.add_argument("--version", action="version", version=f"exoray {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("manifest", help="Phase I: scan an image folder into BASE's manifest")
    p.add_argument("base", help="BASE folder or URI (s3://, gs://, file://)")
    p.add_argument("--images", help="image root to scan (default: the last root, else BASE/data/images)")
    p.set_defaults(handler=cmd_manifest)

    p = sub.add_parser("features", help="Phase II: cheap features for every image (Ray Data)")
    p.add_argument("base")
    p.add_argument("--retry-errors", action="store_true", help="process images that failed before")
    p.add_argument("--part-rows", type=_positive_int, default=1000, help="rows per parquet part")
    p.add_argument("--batch-size", type=_positive_int, default=16, help="images per actor batch")
    p.add_argument("--max-pixels", type=_positive_int, default=100_000_000,
                   help="larger images are refused as decompression bombs")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(handler=cmd_features)

    p = sub.add_parser("dupes", help="exact and near-duplicate groups into features/dupes.parquet")
    p.add_argument("base")
    p.add_argument("--max-distance", type=int, default=6, help="perceptual-hash Hamming distance")
    p.add_argument("--model", help="also join embedding near-duplicates of this model (clip/dino)")
    p.add_argument("--threshold", type=float, default=0.95, help="cosine threshold with --model")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_dupes)

    p = sub.add_parser("status", help="what is done, read from BASE alone")
    p.add_argument("base")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_status)

    p = sub.add_parser("errors", help="list the images a phase could not process, and why")
    p.add_argument("base")
    p.add_argument("--phase", help="features, embed, ... (default: all)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_errors)

    p = sub.add_parser("synth", help="write a synthetic image set with ground truth")
    p.add_argument("dir")
    p.add_argument("--n", type=_positive_int, default=200)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--corrupt", action="store_true", help="add a handful of bad files")
    p.add_argument("--max-megapixels", type=float, default=3.0)
    p.set_defaults(handler=cmd_synth)

    p = sub.add_parser("demo", help="generate a demo set and run every phase on it")
    p.add_argument("base", nargs="?", default=DEFAULT_DEMO_BASE)
    p.add_argument("--n", type=_positive_int, default=200)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(handler=cmd_demo)

    from exoray.cli.explore import add_explore_commands

    add_explore_commands(sub)
    return parser


USER_ERRORS = (ValueError, FileNotFoundError, ImportError, KeyError, OSError)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return args.handler(args)
    except USER_ERRORS as exc:
        if args.verbose:
            raise
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"exoray {args.command}: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"exoray {args.command}: interrupted; rerun the same command to continue",
              file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
