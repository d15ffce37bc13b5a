"""Errors: what fails now, per phase and kind, with what to do about it, and every file in a CSV."""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from exoray.engine.failing import failing_now
from exoray.engine.registry import phase_names
from exoray.engine.schemas import ERROR_SCHEMA
from exoray.image.diagnose import _FIXES as DECODE_FIXES
from exoray.report.context import ReportContext, section, table_block, text_block

INTRO = ("Images a phase could not process, latest outcome only (an image that succeeded since "
         "is not listed), grouped by phase and kind with what to do. Files the scan skipped are "
         "under phase manifest. `exoray errors BASE` prints the same list.")
FIXES = {
    **DECODE_FIXES,
    "missing": "the file vanished: rerun `exoray manifest BASE` to mark it deleted",
    "permission": "make the file readable, then rerun the phase with --retry-errors",
    "io": "a read failed (Drive or network hiccup): the next run retries it by itself",
    "memory": "ran out of memory: the next run retries it; fewer actors or --max-pixels help",
    "worker": "a worker process died: the next run retries it by itself",
    "internal": "a bug in exoray: report the file; --retry-errors after an upgrade",
    # What the scan skips (phase manifest): nothing to fix unless the file should be included.
    "unknown_extension": "not an image extension the decoders open; set EXORAY_EXTENSIONS "
                         "(e.g. +fits) if it is one",
    "hidden": "hidden files and folders are skipped on purpose; rename it to include it",
    "appledouble": "macOS metadata (._ file), not an image: nothing to do",
    "image_named_folder": "a folder named like an image: nothing to do",
    "outside_root": "a symlink leading outside the image root: copy the target in to include it",
    "loop": "a symlink loop: each real folder is scanned once, nothing to do",
    "already_scanned": "a second link to a folder already scanned: nothing to do",
    "unlistable": "the folder could not be listed (Drive hiccup?): rerun `exoray manifest`",
    "broken_link": "a symlink to nothing: fix or remove the link",
    "not_a_file": "a device, socket or pipe, not a file: nothing to do",
    "unreadable": "the entry could not be read: check its permissions and rerun the scan",
}


def fix_for(kind: str) -> str:
    return FIXES.get(kind, "see the message; rerun the phase with --retry-errors once fixed")


def skipped_files(ctx: ReportContext) -> pa.Table:
    """What the last scan skipped, as errors-table rows of phase ``manifest``."""
    from exoray.image.manifest import read_skipped

    skipped = read_skipped(ctx.store)
    if skipped is None or skipped.num_rows == 0:
        return ERROR_SCHEMA.empty_table()
    rows = [{"relpath": r["relpath"], "phase": "manifest", "error": r["reason"],
             "message": f"{r['relpath']}: skipped by the scan ({r['reason']}"
                        + (f"; {r['detail']})" if r.get("detail") else ")")}
            for r in skipped.to_pylist()]
    return pa.Table.from_pylist(rows, schema=ERROR_SCHEMA)


def failing(ctx: ReportContext) -> pa.Table:
    """Every phase's failing images plus the scan's skipped files."""
    tables = [skipped_files(ctx)] + [failing_now(ctx.store.location, p) for p in phase_names()]
    tables = [t for t in tables if t.num_rows]
    return pa.concat_tables(tables) if tables else ERROR_SCHEMA.empty_table()


def errors_section(ctx: ReportContext) -> dict[str, Any]:
    table = failing(ctx)
    if table.num_rows == 0:
        return section("errors", "Errors", INTRO, [text_block("Nothing is failing.")])
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for row in table.select(["phase", "error", "relpath", "message"]).to_pylist():
        groups.setdefault((row["phase"], row["error"]), []).append(row)
    rows = [[phase, kind, len(items), fix_for(kind), items[0]["relpath"] or "",
             items[0]["message"] or ""]
            for (phase, kind), items in sorted(groups.items(), key=lambda kv: -len(kv[1]))]
    link = ctx.export("errors", table.select(["relpath", "phase", "error", "message",
                                              "image_id", "run_id"]))
    return section("errors", "Errors", INTRO, [
        table_block(["phase", "kind", "images", "fix", "example", "message"], rows,
                    title=f"{table.num_rows} failing", csv=link)])
