"""CLI sub-commands for data quality: `exoray issues` and `exoray dupes BASE --list`."""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import os
import sys
import textwrap
from collections.abc import Callable, Sequence
from typing import Any

FORMATS = ("table", "csv", "json")
_DUPES_JSON_HELP = "the summary (with --list: the rows) as JSON"


# -- output ---------------------------------------------------------------------------------------
def _clean(value: Any) -> Any:
    """Floats to 6 significant digits (float32 noise off), NaN/inf to None (valid JSON)."""
    if isinstance(value, float):
        return float(f"{value:.6g}") if math.isfinite(value) else None
    return value


def _rows(table: Any) -> list[dict[str, Any]]:
    return [{k: _clean(v) for k, v in row.items()} for row in table.to_pylist()]


def _format_for(fmt: str | None, output: str | None) -> str:
    """--format, else the --output file's extension (.csv/.json), else a table (stdout) or csv."""
    if fmt:
        return fmt
    if output:
        ext = os.path.splitext(output)[1].lower().lstrip(".")
        return ext if ext in ("csv", "json") else "csv"
    return "table"


def _render(table: Any, fmt: str, table_lines: Callable[[list[dict[str, Any]]], list[str]]) -> str:
    rows = _rows(table)
    if fmt == "json":
        return json.dumps(rows, indent=2) + "\n"
    if fmt == "csv":
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=list(table.column_names), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        return buf.getvalue()
    return "\n".join(table_lines(rows)) + "\n"


def _write(text: str, output: str | None = None) -> None:
    """``text`` into ``output``, or onto stdout in one write (a closed pipe ends it quietly)."""
    if output:
        with open(output, "w", encoding="utf-8", newline="") as f:
            f.write(text)
        return
    try:
        sys.stdout.write(text)
        sys.stdout.flush()
    except BrokenPipeError:  # `| head`: stop quietly, as other command-line tools do
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())


def _columns(rows: list[dict[str, Any]], spec: Sequence[tuple[str, str, Callable[[Any], str]]]
             ) -> list[str]:
    """Aligned text columns: spec is (header, align '<' or '>', cell formatter)."""
    cells = [[fmt(r) for _, _, fmt in spec] for r in rows]
    widths = [max([len(h)] + [len(c[i]) for c in cells]) for i, (h, _, _) in enumerate(spec)]
    last = len(spec) - 1

    def line(values: Sequence[str]) -> str:
        parts = [v if i == last and spec[i][1] == "<" else f"{v:{spec[i][1]}{widths[i]}}"
                 for i, v in enumerate(values)]
        return "  ".join(parts).rstrip()

    return [line([h for h, _, _ in spec])] + [line(c) for c in cells]


def _num(value: Any, digits: int = 4) -> str:
    return "" if value is None else f"{value:.{digits}g}"


def _check_list_options(args: argparse.Namespace, listing: bool, what: str) -> None:
    if not listing and (args.format or args.output):
        raise ValueError(f"--format and --output go with --list; e.g. `exoray {what} "
                         f"{args.base} --list{' ISSUE' if what == 'issues' else ''} "
                         f"--format {args.format or 'csv'}`")


# -- exoray dupes BASE --list ---------------------------------------------------------------------
def _dupes_table_lines(rows: list[dict[str, Any]]) -> list[str]:
    return _columns(rows, [
        ("group", ">", lambda r: str(r["group_id"])),
        ("kind", "<", lambda r: r["kind"]),
        ("keep", "<", lambda r: "keep" if r["keep"] else "-"),
        ("image_id", "<", lambda r: r["image_id"]),
        ("size", ">", lambda r: f"{r['width']}x{r['height']}"),
        ("bytes", ">", lambda r: str(r["bytes"])),
        ("sharpness", ">", lambda r: _num(r["sharpness"])),
        ("relpath", "<", lambda r: r["relpath"] or ""),
    ])


def list_dupes(args: argparse.Namespace) -> int:
    from pipelines import dupes

    if not dupes.has_dupes(args.base):
        print(f"no features/dupes.parquet in {args.base} yet: grouping first, as "
              f"`exoray dupes {args.base}` does", file=sys.stderr)
        dupes.run(args.base, max_distance=args.max_distance, model=args.model,
                  threshold=args.threshold)
    found = dupes.list_duplicates(args.base)
    for note in found.notes:
        print(f"note: {note}", file=sys.stderr)
    fmt = "json" if args.json and not args.format else _format_for(args.format, args.output)
    tally = (f"{found.groups} duplicate groups, {found.table.num_rows} images: keep one per "
             f"group ({dupes.KEEP_RULE}), {found.redundant} could go")
    _emit(_render(found.table, fmt, _dupes_table_lines), fmt, args.output, tally)
    return 0


def _emit(text: str, fmt: str, output: str | None, tally: str) -> None:
    """Rows to ``output`` (then say so) or stdout; a table on stdout ends with ``tally``."""
    if output:
        _write(text, output)
        print(f"wrote {fmt} to {output}: {tally}")
    else:
        _write(text + (tally + "\n" if fmt == "table" else ""))


def _add_list_options(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument("--format", choices=FORMATS,
                   help="with --list: a readable table, CSV or JSON rows (default: table on "
                        "stdout; with --output, from the file's extension, else csv)")
    p.add_argument("--output", metavar="FILE",
                   help=f"with --list: write the {what} to FILE instead of stdout")


def _add_dupes_list(p: argparse.ArgumentParser) -> None:
    p.add_argument("--list", action="store_true",
                   help="list the saved groups, one row per image: group_id, kind "
                        "(exact/near/embedding), keep (the member to keep: most pixels, then "
                        "sharpest, then largest file, then shortest path), image_id, relpath, width, height, bytes, "
                        "sharpness; groups first if BASE has none yet")
    _add_list_options(p, "rows")


def _dupes_handler(grouping: Callable[[argparse.Namespace], int]) -> Callable[..., int]:
    def handle(args: argparse.Namespace) -> int:
        _check_list_options(args, args.list, "dupes")
        return list_dupes(args) if args.list else grouping(args)

    return handle


def cmd_dupes_group(args: argparse.Namespace) -> int:
    """`exoray dupes BASE` without --list: group and print the summary."""
    from pipelines import dupes

    summary = dupes.run(args.base, max_distance=args.max_distance, model=args.model,
                        threshold=args.threshold)
    print(json.dumps(summary, indent=2) if args.json else dupes.format_summary(summary))
    return 0


def add_dupes_command(sub: Any, parents: list[argparse.ArgumentParser]) -> argparse.ArgumentParser:
    """The whole `exoray dupes` command: grouping options plus --list/--format/--output."""
    p = sub.add_parser("dupes", help="exact and near-duplicate groups into "
                                     "features/dupes.parquet; --list prints them",
                       parents=parents)
    p.add_argument("base", help="BASE folder or URI (s3://, gs://, file://)")
    p.add_argument("--max-distance", type=int, default=6,
                   help="perceptual-hash Hamming distance (default: 6)")
    p.add_argument("--model", help="also join embedding near-duplicates of this model (clip/dino)")
    p.add_argument("--threshold", type=float, default=0.95,
                   help="cosine threshold with --model (default: 0.95)")
    p.add_argument("--json", action="store_true", help=_DUPES_JSON_HELP)
    _add_dupes_list(p)
    p.set_defaults(handler=_dupes_handler(cmd_dupes_group))
    return p


# -- exoray issues --------------------------------------------------------------------------------
def _thresholds_epilog() -> str:
    from exoray.explore.quality import ISSUES

    lines = ["issues (NAME: what [flagged when score ..., default]: why this default):"]
    for issue in ISSUES:
        rule = ("yes/no, no threshold" if issue.threshold is None else
                f"{issue.rule(issue.threshold)}, {issue.unit}"
                + (", relative to the collection" if issue.relative else ""))
        lines += textwrap.wrap(f"{issue.name}: {issue.help} [{rule}]", 79,
                               initial_indent="  ", subsequent_indent="      ")
        lines += textwrap.wrap(issue.why, 79, initial_indent="      ",
                               subsequent_indent="      ")
    return "\n".join(lines)


def _summary_lines(report: Any, base: str, examples: int) -> list[str]:
    lines = [f"{report.images} images with Phase II features in {base}"
             + (f"; near duplicates from {report.dupes_source}" if report.dupes_source else "")]
    rows = report.summary(examples)
    spec = [
        ("issue", "<", lambda r: r["issue"]),
        ("images", ">", lambda r: str(r["count"])),
        ("share", ">", lambda r: f"{100 * r['share']:.1f}%"),
        ("rule", "<", lambda r: "yes/no" if r["threshold"] is None else
         f"{'<' if r['direction'] == 'below' else '>'} {r['threshold']:g}"),
        ("what", "<", lambda r: r["help"]),
    ]
    table = _columns(rows, spec)
    lines.append(table[0])
    for row, text in zip(rows, table[1:], strict=True):
        lines.append(text)
        if row["examples"]:
            lines.append("      e.g. " + ", ".join(row["examples"]))
    lines.append(f"every image of one issue: exoray issues {base} --list ISSUE "
                 "[--format csv|json]; change a threshold: --threshold NAME=VALUE")
    return lines


def _issue_table_lines(rows: list[dict[str, Any]]) -> list[str]:
    return _columns(rows, [
        ("score", ">", lambda r: _num(r["score"])),
        ("image_id", "<", lambda r: r["image_id"]),
        ("relpath", "<", lambda r: r["relpath"] or ""),
    ])


def cmd_issues(args: argparse.Namespace) -> int:
    from exoray.explore.quality import find_issues, get_issue, parse_thresholds

    thresholds = parse_thresholds(args.threshold)
    if args.list_issue is not None:
        get_issue(args.list_issue)  # a one-line error naming the valid issues, before reading
    _check_list_options(args, args.list_issue is not None, "issues")
    from exoray.storage.store import Store

    if not Store(args.base).is_dir(""):
        raise FileNotFoundError(f"BASE {args.base} does not exist; check the path")
    report = find_issues(args.base, thresholds)
    for note in report.notes:
        print(f"note: {note}", file=sys.stderr)
    if args.list_issue is None:
        if args.json:
            _write(json.dumps({"base": args.base, "images": report.images,
                               "dupes_source": report.dupes_source, "notes": report.notes,
                               "thresholds": report.thresholds,
                               "issues": report.summary(args.examples)}, indent=2) + "\n")
        else:
            _write("\n".join(_summary_lines(report, args.base, args.examples)) + "\n")
        return 0
    rows = report.affected(args.list_issue)
    fmt = "json" if args.json and not args.format else _format_for(args.format, args.output)
    issue = get_issue(args.list_issue)
    tally = (f"{rows.num_rows} of {report.images} images are {args.list_issue} "
             f"(score {issue.rule(report.thresholds[args.list_issue])}"
             + (f", {issue.unit}" if issue.unit else "") + ")")
    _emit(_render(rows, fmt, _issue_table_lines), fmt, args.output, tally)
    return 0


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a non-negative integer")
    return value


def add_quality_commands(sub: Any, parents: list[argparse.ArgumentParser]) -> None:
    """`exoray issues`, and --list/--format/--output on `exoray dupes` (added to the existing
    dupes command when the caller already defined it, else the whole command is defined here)."""
    from exoray.explore.quality import issue_names, threshold_names

    existing = sub.choices.get("dupes") if hasattr(sub, "choices") else None
    if existing is None:
        add_dupes_command(sub, parents)
    else:
        _add_dupes_list(existing)
        for action in existing._actions:
            if action.dest == "json":
                action.help = _DUPES_JSON_HELP
        existing.set_defaults(handler=_dupes_handler(existing.get_default("handler")))

    p = sub.add_parser(
        "issues", parents=parents, formatter_class=argparse.RawDescriptionHelpFormatter,
        help="cleanvision-style report: dark, light, blurry, low-information, odd size/aspect, "
             "tiny, grayscale and duplicate images, from Phase II features",
        description="Count images with each issue (most common first, with examples), or list "
                    "every image of one issue. Reads Phase II features of present images (and "
                    "features/dupes.parquet for near duplicates); decodes nothing.",
        epilog=_thresholds_epilog())
    p.add_argument("base", help="BASE folder or URI (s3://, gs://, file://)")
    p.add_argument("--threshold", metavar="NAME=VALUE", action="append",
                   help="override a default threshold, repeatable; names: "
                        + ", ".join(threshold_names()))
    p.add_argument("--list", metavar="ISSUE", dest="list_issue",
                   help="every image with this issue (image_id, relpath, score; worst first); "
                        "issues: " + ", ".join(issue_names()))
    _add_list_options(p, "rows")
    p.add_argument("--json", action="store_true",
                   help="the report (or with --list, the rows) as JSON")
    p.add_argument("--examples", metavar="N", type=_non_negative_int, default=3,
                   help="example relpaths per issue in the report (default: 3)")
    p.set_defaults(handler=cmd_issues)
