"""Overview: per phase and output, done / total / errors and the last run (``exoray status``)."""

from __future__ import annotations

from typing import Any

from exoray.engine.status import collect_status
from exoray.report.context import ReportContext, section, table_block, text_block

INTRO = ("What has run on this collection: for each phase output, how many images are done, how "
         "many fail (see Errors below), and the last run. Sections further down appear as the "
         "phases they show have run; each says which command fills it.")


def _last(run: dict[str, Any] | None) -> str:
    if not run:
        return "never"
    started = run.get("started_at")
    when = started.strftime("%Y-%m-%d %H:%M") if hasattr(started, "strftime") else str(started)
    rate = f", {run['images_per_s']:.1f} img/s" if run.get("images_per_s") else ""
    took = f", {run['seconds']:.0f} s" if run.get("seconds") is not None else ""
    return f"{run.get('status')} {when}{took}{rate}"


def overview_section(ctx: ReportContext) -> dict[str, Any]:
    st = collect_status(ctx.store.location)
    rows = []
    for p in st.phases:
        share = 100.0 * p.done / p.total if p.total else 0.0
        scope = p.extra.get("subset")
        rows.append([p.phase + (f" (subset {scope})" if scope else ""), p.done, p.total,
                     f"{share:.0f}%", p.errors, p.model_id or "", _last(p.last_run)])
    blocks = [text_block(f"{st.images_present} images present, {st.images_deleted} deleted, "
                         f"image root {st.image_root}.")]
    blocks.append(table_block(["phase", "done", "total", "done %", "errors", "model",
                               "last run"], rows))
    return section("overview", "Overview", INTRO, blocks)
