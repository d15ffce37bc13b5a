"""CLI sub-commands generated from the phase specs: one per phase, with the common options."""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any

from exoray.engine.executors import EXECUTORS
from exoray.engine.spec import PhaseSpec
from exoray.util.cli_types import positive_float_arg, positive_int_arg

GROUP_HELP = {
    "semantics": "Phase V: detectors, OCR, ... on chosen subsets (one task per run: --task)",
}


def add_phase_commands(sub: Any, parents: list[argparse.ArgumentParser]) -> None:
    from exoray.engine.registry import phase_specs

    groups: dict[str, list[PhaseSpec]] = {}
    for spec in phase_specs():
        if spec.group:
            groups.setdefault(spec.group, []).append(spec)
            continue
        p = sub.add_parser(spec.name, help=spec.help, description=spec.help, parents=parents)
        p.add_argument("base", nargs="?" if spec.actions else None,
                       help="BASE folder or URI (s3://, gs://, file://)")
        for opt in spec.options:
            opt.add_to(p, cli_name="--model" if opt.name == "models" else
                       "--checkpoint" if opt.name == "checkpoints" else
                       "--prompt" if opt.name == "prompts" else None)
        _common_options(p, spec.default_part_rows)
        p.set_defaults(handler=_handler(spec), phase_spec=spec)
    for group, specs in groups.items():
        _add_group(sub, parents, group, specs)


def _add_group(sub: Any, parents: list[argparse.ArgumentParser], group: str,
               specs: list[PhaseSpec]) -> None:
    """One command for several phases (``--task`` picks one); each option is listed once and
    checked against the chosen task's own options."""
    lines = [f"  {s.name}: {s.help}" for s in specs]
    p = sub.add_parser(group, help=GROUP_HELP.get(group, group), parents=parents,
                       description=GROUP_HELP.get(group, group) + "\ntasks:\n" + "\n".join(lines),
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("base", help="BASE folder or URI (s3://, gs://, file://)")
    p.add_argument("--task", required=True, choices=[s.name for s in specs])
    by_name = {s.name: s for s in specs}
    seen: dict[str, list[str]] = {}
    for spec in specs:
        for opt in spec.options:
            seen.setdefault(opt.name, []).append(spec.name)
    for name, tasks in seen.items():
        opts = [by_name[t].option(name) for t in tasks]
        defaults = {t: o.default for t, o in zip(tasks, opts, strict=True)}
        opt = opts[0]
        if len(set(map(repr, defaults.values()))) > 1:
            per_task = ", ".join(f"{t}: {d}" for t, d in defaults.items())
            opt = dataclasses.replace(opt, help=f"{opt.help} (default: {per_task})",
                                      default=None)
        elif len(tasks) < len(specs):
            opt = dataclasses.replace(opt, help=f"{opt.help} [{', '.join(tasks)}]")
        opt.add_to(p)
        p.set_defaults(**{name: None})  # None = not given: the task's own default
    _common_options(p, None)

    def handle(args: argparse.Namespace) -> int:
        spec = by_name[args.task]
        own = {o.name for o in spec.options}
        foreign = [name for name in seen if name not in own and getattr(args, name) not in
                   (None, False)]
        if foreign:
            flags = ", ".join("--" + n.replace("_", "-") for n in foreign)
            raise ValueError(f"{flags}: not an option of --task {spec.name} (it belongs to "
                             f"{', '.join(sorted({t for n in foreign for t in seen[n]}))}); "
                             f"see exoray {group} --help")
        return _handler(spec)(args)

    p.set_defaults(handler=handle)


def _common_options(p: argparse.ArgumentParser, default_part_rows: int | None) -> None:
    p.add_argument("--retry-errors", action="store_true",
                   help="process images whose last attempt failed permanently too")
    p.add_argument("--part-rows", type=positive_int_arg, default=None,
                   help=f"rows per parquet part (default: {default_part_rows or 'per phase'})")
    p.add_argument("--subset", metavar="EXPR",
                   help="only images whose Phase IV flags match, e.g. 'photo and not dark' "
                        "(default: all images)")
    p.add_argument("--estimate", action="store_true",
                   help="only count what is left to do and estimate the time; run nothing")
    p.add_argument("--max-minutes", type=positive_float_arg, default=None, metavar="M",
                   help="stop cleanly within M minutes (e.g. before a Colab session ends): "
                        "takes what fits at this phase's measured rate, everything done stays "
                        "committed; rerun to continue")
    p.add_argument("--executor", choices=EXECUTORS, default="auto",
                   help="ray: the Ray Data pipeline; local: a process pool on this machine (CPU "
                        "phases such as features); auto (default): local for small CPU runs "
                        "while Ray is not running, else Ray")


def _handler(spec: PhaseSpec):
    def handle(args: argparse.Namespace) -> int:
        from exoray.engine.runner import run_phase

        options = {o.name: getattr(args, o.name) for o in spec.options}
        if spec.group:  # shared options arrive as None when not given: the task's defaults
            options = {k: v for k, v in options.items() if v is not None}
        asked = [name for name in spec.actions if options.pop(name, False)]
        if asked:
            print(spec.actions[asked[0]](options), end="")
            return 0
        if args.base is None:
            raise ValueError(f"exoray {spec.name} needs a BASE folder")
        result = run_phase(spec, args.base, retry_errors=args.retry_errors,
                           part_rows=args.part_rows, estimate=args.estimate,
                           subset=args.subset, show_progress=not args.quiet,
                           max_minutes=args.max_minutes, executor=args.executor, **options)
        print(result)
        for event in result.events:
            print(f"  event: {event}")
        if result.run_id is not None and spec.next_step and not args.quiet:
            print("next: " + spec.next_step.format(base=args.base))
        return 0

    return handle
