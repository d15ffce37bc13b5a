"""CLI sub-commands generated from the phase specs: one per phase, with the common options."""

from __future__ import annotations

import argparse
from typing import Any

from exoray.engine.spec import PhaseSpec
from exoray.util.cli_types import positive_int_arg


def add_phase_commands(sub: Any, parents: list[argparse.ArgumentParser]) -> None:
    from exoray.engine.registry import phase_specs

    for spec in phase_specs():
        p = sub.add_parser(spec.name, help=spec.help, description=spec.help, parents=parents)
        p.add_argument("base", nargs="?" if spec.actions else None,
                       help="BASE folder or URI (s3://, gs://, file://)")
        for opt in spec.options:
            opt.add_to(p, cli_name="--model" if opt.name == "models" else
                       "--checkpoint" if opt.name == "checkpoints" else None)
        p.add_argument("--retry-errors", action="store_true",
                       help="process images whose last attempt failed permanently too")
        p.add_argument("--part-rows", type=positive_int_arg, default=None,
                       help=f"rows per parquet part (default: {spec.default_part_rows})")
        p.add_argument("--subset", metavar="EXPR",
                       help="only images whose Phase IV flags match, e.g. 'photo and not dark' "
                            "(default: all images)")
        p.add_argument("--estimate", action="store_true",
                       help="only count what is left to do and estimate the time; run nothing")
        p.set_defaults(handler=_handler(spec), phase_spec=spec)


def _handler(spec: PhaseSpec):
    def handle(args: argparse.Namespace) -> int:
        from exoray.engine.runner import run_phase

        options = {o.name: getattr(args, o.name) for o in spec.options}
        asked = [name for name in spec.actions if options.pop(name, False)]
        if asked:
            print(spec.actions[asked[0]](options), end="")
            return 0
        if args.base is None:
            raise ValueError(f"exoray {spec.name} needs a BASE folder")
        result = run_phase(spec, args.base, retry_errors=args.retry_errors,
                           part_rows=args.part_rows, estimate=args.estimate,
                           subset=args.subset, show_progress=not args.quiet, **options)
        print(result)
        for event in result.events:
            print(f"  event: {event}")
        if result.run_id is not None and spec.next_step and not args.quiet:
            print("next: " + spec.next_step.format(base=args.base))
        return 0

    return handle
