"""``exoray status``: what is done, read from BASE alone (works while a run is going, or after)."""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import asdict, dataclass, field
from typing import Any

import pyarrow.compute as pc

from exoray.engine.done import count_done, done_keys, permanent_error_keys, present_images
from exoray.engine.errors_table import read_errors
from exoray.engine.jobs import read_jobs
from exoray.image.manifest import manifest_root, read_manifest
from exoray.index.store import index_coverage
from exoray.storage import layout
from exoray.storage.parts import list_parts
from exoray.storage.store import Store


@dataclass
class PhaseStatus:
    phase: str
    folder: str
    total: int
    done: int
    errors: int
    parts: int
    last_run: dict[str, Any] | None = None
    eta_seconds: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def remaining(self) -> int:
        return max(0, self.total - self.done - self.errors)


@dataclass
class StoreStatus:
    base: str
    image_root: str | None
    images_total: int
    images_present: int
    images_deleted: int
    phases: list[PhaseStatus]

    def to_json(self) -> str:
        return json.dumps(asdict(self), default=str, indent=2)


def _last_run(jobs: Any, phase: str) -> dict[str, Any] | None:
    if jobs.num_rows == 0:
        return None
    rows = jobs.filter(pc.equal(jobs["phase"], phase))
    if rows.num_rows == 0:
        return None
    row = rows.slice(rows.num_rows - 1).to_pylist()[0]
    return {k: row[k] for k in ("run_id", "status", "started_at", "finished_at", "seconds",
                                "processed", "errors", "images_per_s", "model_id")}


def phase_status(store: Store, images: Any, jobs: Any, errors: Any, phase: str, folder: str,
                 error_phase: str | None = None, job_phase: str | None = None) -> PhaseStatus:
    """One phase's counts from its parts (listed once) and the already-read errors table."""
    parts = list_parts(store, folder)
    done = count_done(images, done_keys(store, folder, parts=parts)) if parts else 0
    n_errors = count_done(images, permanent_error_keys(errors, error_phase or phase))
    last = _last_run(jobs, job_phase or phase)
    rate = (last or {}).get("images_per_s")
    if last and last["status"] == "running" and last["started_at"]:
        # Still running (or killed): its rate so far, from the parts it has committed.
        rows = sum(p.rows for p in parts if p.run_id == last["run_id"])
        elapsed = (dt.datetime.now(dt.timezone.utc) - last["started_at"]).total_seconds()
        last = {**last, "processed": rows}
        rate = rows / elapsed if elapsed > 0 and rows else None
    st = PhaseStatus(phase, folder, images.num_rows, done, n_errors, len(parts), last)
    if rate:
        st.eta_seconds = st.remaining / rate
    return st


def collect_status(base: str) -> StoreStatus:
    store = Store(base)
    manifest = read_manifest(store)
    if manifest is None:
        return StoreStatus(store.location, None, 0, 0, 0, [])
    images = present_images(manifest)
    jobs = read_jobs(store)
    errors = read_errors(store)
    phases = [phase_status(store, images, jobs, errors, "features", layout.FEATURES)]
    for entry in sorted(_embedding_models(store)):
        st = phase_status(store, images, jobs, errors, f"embed:{entry}",
                          layout.embeddings_folder(entry),
                          error_phase="embed", job_phase="embed")
        coverage = index_coverage(store, entry)
        st.extra["index"] = (f"{coverage['kind']} of {coverage['count']}, "
                             f"{coverage['not_indexed']} embeddings not indexed yet"
                             if coverage else "not built")
        phases.append(st)
    return StoreStatus(store.location, manifest_root(store), manifest.num_rows, images.num_rows,
                       manifest.num_rows - images.num_rows, phases)


def _embedding_models(store: Store) -> list[str]:
    if not store.is_dir("embeddings"):
        return []
    folders = {e.relpath.split("/", 1)[0] for e in store.list_files("embeddings", recursive=True)
               if "/" in e.relpath}
    return sorted(folders)


def _fmt_duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    seconds = int(seconds)
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s" if m else f"{s}s"


def format_status(st: StoreStatus) -> str:
    if st.image_root is None and not st.phases:
        return f"{st.base}: no manifest yet; run `exoray manifest {st.base} --images DIR`"
    lines = [f"BASE {st.base}", f"images  {st.images_present} present, {st.images_deleted} deleted "
             f"(root {st.image_root})"]
    for p in st.phases:
        pct = 100.0 * (p.done + p.errors) / p.total if p.total else 100.0
        line = (f"{p.phase:<14} {p.done}/{p.total} done, {p.errors} errors, {p.parts} parts "
                f"({pct:.0f}%)")
        if p.remaining and p.eta_seconds is not None:
            line += f", ETA {_fmt_duration(p.eta_seconds)}"
        if p.last_run:
            lr = p.last_run
            rate = f"{lr['images_per_s']:.1f} img/s" if lr.get("images_per_s") else "-"
            line += (f"; last run {lr['run_id']} {lr['status']}, started {lr['started_at']:%Y-%m-%d %H:%M}"
                     f", took {_fmt_duration(lr['seconds'])}, {rate}")
        for key, value in p.extra.items():
            line += f"; {key} {value}"
        lines.append(line)
    return "\n".join(lines)
