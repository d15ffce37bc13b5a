"""The ``exoray`` command line: one sub-command per phase spec, plus status, errors, doctor,
dupes, navigation, synth and demo."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Callable, Sequence

from exoray import __version__
from exoray.util.cli_types import positive_float_arg, positive_int_arg

Handler = Callable[[argparse.Namespace], int]
DEFAULT_DEMO_BASE = "demo_base"


def _existing_base(base: str) -> None:
    """Read-only commands never create a mistyped BASE."""
    from exoray.storage.store import Store

    if not Store(base).is_dir(""):
        raise FileNotFoundError(f"BASE {base} does not exist; check the path")


# -- handlers -------------------------------------------------------------------------------------
def cmd_manifest(args: argparse.Namespace) -> int:
    from pipelines import manifest

    print(manifest.run(args.base, images=args.images))
    print(f"next: exoray features {args.base}   # Phase II cheap features")
    return 0


def cmd_dupes(args: argparse.Namespace) -> int:
    from pipelines import dupes

    summary = dupes.run(args.base, max_distance=args.max_distance, model=args.model,
                        threshold=args.threshold)
    print(json.dumps(summary, indent=2) if args.json else dupes.format_summary(summary))
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from exoray.engine.status import collect_status, format_status

    st = collect_status(args.base, subset=args.subset, session_minutes=args.session_minutes)
    print(st.to_json() if args.json else format_status(st))
    return 0


def cmd_errors(args: argparse.Namespace) -> int:
    from exoray.engine.failing import failing_now

    _existing_base(args.base)
    table = failing_now(args.base, args.phase)
    rows = table.select(["phase", "relpath", "error", "message", "run_id"]).to_pylist()
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    for r in rows:
        print(f"{r['phase']:<9} {r['error']:<11} {r['message']}")
    print(f"{len(rows)} images failing" + (f" in phase {args.phase}" if args.phase else ""))
    return 0


def cmd_subsets(args: argparse.Namespace) -> int:
    from exoray.explore.subsets import format_subsets, subsets_summary

    _existing_base(args.base)
    summary = subsets_summary(args.base)
    print(json.dumps(summary, indent=2) if args.json else format_subsets(summary))
    return 0


def cmd_doctor(args: argparse.Namespace) -> int:
    from exoray.engine.doctor import check_base, format_report

    _existing_base(args.base)
    report = check_base(args.base, fix=args.fix)
    print(json.dumps(report, indent=2, default=str) if args.json else format_report(report))
    return 0 if report["healthy"] or args.fix else 1


def cmd_synth(args: argparse.Namespace) -> int:
    from exoray.dev.synth import make_image_set

    truth = make_image_set(args.dir, n=args.n, seed=args.seed, corrupt=args.corrupt,
                           max_megapixels=args.max_megapixels)
    print(f"wrote {len(truth['images'])} files with ground truth to "
          f"{os.path.join(args.dir, 'truth.json')}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from exoray.dev.demo import run_demo

    run_demo(args.base, n=args.n, seed=args.seed, show_progress=not args.quiet)
    return 0


# -- parser ---------------------------------------------------------------------------------------
def _common() -> argparse.ArgumentParser:
    """-v/-q, accepted before or after the sub-command."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                        help="debug logging, Ray's own messages and full tracebacks")
    common.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS,
                        help="no progress bar")
    return common


def build_parser() -> argparse.ArgumentParser:
    parents = [_common()]
    parser = argparse.ArgumentParser(
        prog="exoray", parents=parents,
        description="Explore a large image collection: resumable Ray Data phases.")
    parser.add_argument("--version", action="version", version=f"exoray {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("manifest", help="Phase I: scan an image folder into BASE's manifest",
                       parents=parents)
    p.add_argument("base", help="BASE folder or URI (s3://, gs://, file://)")
    p.add_argument("--images", help="image root to scan (default: the last root, else "
                                    "BASE/data/images)")
    p.set_defaults(handler=cmd_manifest)

    from exoray.cli.phases import add_phase_commands

    add_phase_commands(sub, parents)

    p = sub.add_parser("dupes", help="exact and near-duplicate groups into features/dupes.parquet",
                       parents=parents)
    p.add_argument("base")
    p.add_argument("--max-distance", type=int, default=6,
                   help="perceptual-hash Hamming distance (default: 6)")
    p.add_argument("--model", help="also join embedding near-duplicates of this model (clip/dino)")
    p.add_argument("--threshold", type=float, default=0.95,
                   help="cosine threshold with --model (default: 0.95)")
    p.add_argument("--json", action="store_true", help="the summary as JSON")
    p.set_defaults(handler=cmd_dupes)

    p = sub.add_parser("status", help="what is done, read from BASE alone", parents=parents)
    p.add_argument("base")
    p.add_argument("--json", action="store_true", help="structured status")
    p.add_argument("--subset", metavar="EXPR",
                   help="count only the images of a Phase IV subset, e.g. 'text_heavy' (default: "
                        "each phase's last run's subset, else all images)")
    p.add_argument("--session-minutes", type=positive_float_arg, default=None, metavar="M",
                   help="how long your sessions last, for the 'sessions left' estimate "
                        "(default: the last run's --max-minutes, else 180)")
    p.set_defaults(handler=cmd_status)

    from exoray.engine.registry import phase_names

    p = sub.add_parser("errors", help="list the images a phase could not process, and why",
                       parents=parents)
    p.add_argument("base")
    p.add_argument("--phase", choices=["manifest", *phase_names()],
                   help="only this phase; manifest lists what the scan skipped (default: all)")
    p.add_argument("--json", action="store_true", help="rows as JSON")
    p.set_defaults(handler=cmd_errors)

    p = sub.add_parser("subsets", help="Phase IV flags: counts per flag, overlaps, rules version",
                       parents=parents)
    p.add_argument("base")
    p.add_argument("--json", action="store_true", help="the summary as JSON")
    p.set_defaults(handler=cmd_subsets)

    p = sub.add_parser("doctor", help="check BASE: duplicates, corrupt parts, leftovers",
                       parents=parents)
    p.add_argument("base")
    p.add_argument("--fix", action="store_true",
                   help="compact duplicated outputs, quarantine corrupt parts, remove leftovers")
    p.add_argument("--json", action="store_true", help="the report as JSON")
    p.set_defaults(handler=cmd_doctor)

    p = sub.add_parser("synth", help="write a synthetic image set with ground truth",
                       parents=parents)
    p.add_argument("dir")
    p.add_argument("--n", type=positive_int_arg, default=200, help="images (default: 200)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    p.add_argument("--corrupt", action="store_true", help="add a handful of bad files")
    p.add_argument("--max-megapixels", type=float, default=3.0,
                   help="largest image size (default: 3.0)")
    p.set_defaults(handler=cmd_synth)

    p = sub.add_parser("demo", help="generate a demo set and run every phase on it",
                       parents=parents)
    p.add_argument("base", nargs="?", default=DEFAULT_DEMO_BASE)
    p.add_argument("--n", type=positive_int_arg, default=200, help="images (default: 200)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    p.set_defaults(handler=cmd_demo)

    from exoray.cli.embedmap import add_map_commands
    from exoray.cli.explore import add_explore_commands
    from exoray.cli.prompts import add_prompt_commands
    from exoray.cli.quality import add_quality_commands
    from exoray.cli.report import add_report_commands

    add_explore_commands(sub, parents)
    add_prompt_commands(sub, parents)
    add_quality_commands(sub, parents)
    add_map_commands(sub, parents)
    add_report_commands(sub, parents)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from exoray.engine.worker_errors import USER_ERRORS, user_facing

    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse already printed the one-line error (or --help)
        return int(exc.code or 0)
    args.verbose = getattr(args, "verbose", False)
    args.quiet = getattr(args, "quiet", False)
    if args.verbose:
        os.environ["EXORAY_VERBOSE"] = "1"
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    if not args.verbose:  # the hub's retry warnings end in our one-line error anyway
        logging.getLogger("huggingface_hub").setLevel(logging.ERROR)
    try:
        if args.verbose:
            return args.handler(args)
        from exoray.cli.quiet import RayStderrFilter

        with RayStderrFilter():
            return args.handler(args)
    except KeyboardInterrupt:
        print(f"exoray {args.command}: interrupted; rerun the same command to continue",
              file=sys.stderr)
        return 130
    except Exception as exc:
        if args.verbose:
            raise
        cause = user_facing(exc)
        if isinstance(cause, (*USER_ERRORS, OSError, RuntimeError)):
            message = cause.args[0] if isinstance(cause, KeyError) and cause.args else cause
        else:  # a bug: still one line, the traceback is one -v away
            message = (f"{type(cause).__name__}: {cause}; rerun with -v for the traceback and "
                       "please report it")
        print(f"exoray {args.command}: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
