"""``exoray status``: what is done, read from BASE alone (works while a run is going, or after).

Every registered phase spec reports each of its targets on disk; counts use the same keys the
readers deduplicate by, and errors count only images whose latest outcome is still a failure.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import asdict, dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from exoray.engine.done import (
    count_done,
    done_and_outdated,
    done_keys,
    permanent_error_keys,
    present_images,
)
from exoray.engine.errors_table import image_keys, read_errors, without_successes
from exoray.engine.registry import phase_specs
from exoray.engine.runlog import read_runs
from exoray.engine.spec import PhaseSpec, Target
from exoray.image.manifest import manifest_root, read_manifest
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
    model_id: str | None = None
    last_run: dict[str, Any] | None = None
    eta_seconds: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    rate: float | None = None  # images/s over every run that wrote this folder, killed ones too
    rate_runs: int = 0
    sessions: int | None = None  # sessions of session_minutes the rest takes at that rate
    session_minutes: float | None = None

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
    subset: str | None = None
    views: list[str] = field(default_factory=list)  # the maps and the report, one line each

    def to_json(self) -> str:
        return json.dumps(asdict(self), default=str, indent=2)


def _last_run(runs: pa.Table, phase: str, folder: str) -> dict[str, Any] | None:
    """The newest run of ``phase`` that wrote ``folder`` (a clip-only run is not dino's)."""
    if runs.num_rows == 0:
        return None
    rows = runs.filter(pc.equal(runs["phase"], phase)).to_pylist()
    rows = [r for r in rows if folder in (r["targets"] or [])]
    if not rows:
        return None
    row = rows[-1]
    out = {k: row[k] for k in ("run_id", "status", "started_at", "finished_at", "seconds",
                               "processed", "errors", "images_per_s", "model_id")}
    options = json.loads(row["options"]) if row.get("options") else {}
    out["subset"] = options.get("subset") if isinstance(options, dict) else None
    return out


def target_status(store: Store, spec: PhaseSpec, target: Target, images: pa.Table,
                  runs: pa.Table, errors: pa.Table, label: str,
                  session_minutes: float | None = None) -> PhaseStatus:
    """One target's counts from its parts (listed once) and the already-read errors table;
    rate, ETA and sessions left from every earlier run (across kernel deaths)."""
    from exoray.engine.budget import DEFAULT_SESSION_MINUTES, phase_rate, sessions_needed
    from exoray.storage import layout

    parts = list_parts(store, target.folder)
    none = pa.array([], pa.string())
    done, outdated = done_and_outdated(store, target.folder, parts=parts,
                                       version=target.output.version) if parts else (none, none)
    n_stale = count_done(images, outdated)
    stale = spec.stale(store, target) if spec.stale is not None and len(done) else None
    if stale is not None and len(stale):  # out of date rows are not done: the next run redoes
        n_stale += count_done(images, stale)
        done = done.filter(pc.invert(pc.is_in(done, value_set=stale)))
    n_done = count_done(images, done)
    failing = without_successes(errors, done)
    n_errors = count_done(images, permanent_error_keys(failing, spec.name))
    last = _last_run(runs, spec.name, target.folder)
    if last and last["status"] == "running" and last["started_at"]:
        # Still running: its rate so far, from the parts it has committed.
        rows = sum(p.rows for p in parts if p.run_id == last["run_id"])
        elapsed = (dt.datetime.now(dt.timezone.utc) - last["started_at"]).total_seconds()
        last = {**last, "processed": rows,
                "images_per_s": rows / elapsed if elapsed > 0 and rows else None}
    st = PhaseStatus(label, target.folder, images.num_rows, n_done, n_errors, len(parts),
                     target.model_id, last)
    if n_stale:
        st.extra["out of date"] = (f"{n_stale} rows (the next `exoray {spec.group or spec.name}"
                                   "` run recomputes them)")
    if st.remaining:  # the rate only feeds the ETA: a finished output costs no second listing
        overall = phase_rate(store, runs, spec.name, target.folder,
                             layout.errors_folder(spec.name))
        st.rate, st.rate_runs = overall.images_per_s, overall.runs
    if st.rate:
        st.eta_seconds = st.remaining / st.rate
        minutes = session_minutes or _last_max_minutes(runs, spec.name, target.folder) \
            or DEFAULT_SESSION_MINUTES
        st.session_minutes = minutes
        st.sessions = sessions_needed(st.remaining, st.rate, minutes)
    return st


def _last_max_minutes(runs: pa.Table, phase: str, folder: str) -> float | None:
    """The --max-minutes of the newest run of ``phase`` on ``folder`` that set one."""
    rows = runs.filter(pc.equal(runs["phase"], phase)).to_pylist() if runs.num_rows else []
    for row in reversed(rows):
        if folder in (row["targets"] or []):
            minutes = json.loads(row["options"] or "{}").get("max_minutes")
            if minutes:
                return float(minutes)
    return None


class _Subsets:
    """Images of each subset expression, computed once per status call."""

    def __init__(self, store: Store, images: pa.Table) -> None:
        self.store, self.images, self._cache = store, images, {}

    def __call__(self, expr: str | None) -> pa.Table:
        if not expr:
            return self.images
        if expr not in self._cache:
            from exoray.engine.subsets import subset_mask

            self._cache[expr] = self.images.filter(subset_mask(self.store, expr, self.images,
                                                               quiet=True))
        return self._cache[expr]


def collect_status(base: str, subset: str | None = None,
                   session_minutes: float | None = None) -> StoreStatus:
    """Per phase target: done / errors / left of all present images, or of ``subset`` (else of
    the subset its last run selected, e.g. a Phase V task run on ``text_heavy``)."""
    store = Store(base)
    if not store.is_dir(""):
        raise FileNotFoundError(f"BASE {store.location} does not exist; check the path (exoray "
                                "creates a BASE with `exoray manifest BASE --images DIR`)")
    manifest = read_manifest(store)
    if manifest is None:
        return StoreStatus(store.location, None, 0, 0, 0, [])
    images = present_images(manifest)
    runs = read_runs(store)
    errors = read_errors(store)
    subsets = _Subsets(store, images)
    if subset:
        subsets(subset)  # a bad expression fails before anything is printed
    phases = []
    for spec in phase_specs():
        targets = spec.discover(store)
        for target in targets:
            label = spec.name if len(spec.outputs) == 1 and target.label == spec.name \
                else f"{spec.name}:{target.label}"
            expr = subset or (_last_run(runs, spec.name, target.folder) or {}).get("subset")
            try:
                selected = subsets(expr)
            except ValueError:  # the flags that subset named are gone: count all images
                selected, expr = images, None
            if expr and not subset:
                # The flags may have changed since that run (new evidence): what it did still
                # counts, so the total is the subset now plus whatever is already done.
                done = done_keys(store, target.folder)
                in_done = pc.is_in(image_keys(images), value_set=done) if len(done) else None
                if in_done is not None:
                    keep = pc.or_(pc.is_in(image_keys(images), value_set=image_keys(selected)),
                                  in_done)
                    selected = images.filter(keep)
            st = target_status(store, spec, target, selected, runs, errors, label,
                               session_minutes)
            if expr:
                st.extra["subset"] = expr
            if spec.name == "embed":
                _add_index_coverage(store, st, target)
            phases.append(st)
    return StoreStatus(store.location, manifest_root(store), manifest.num_rows, images.num_rows,
                       manifest.num_rows - images.num_rows, phases, subset,
                       views=view_lines(store, images))


def _add_index_coverage(store: Store, st: PhaseStatus, target: Target) -> None:
    from exoray.index.store import index_coverage

    model = target.label.split(":", 1)[0]
    coverage = index_coverage(store, model)
    if coverage is None:
        st.extra["index"] = "not built"
    elif coverage.get("model_id") != target.model_id:
        st.extra["index"] = f"built for another model ({coverage.get('model_id')})"
    else:
        st.extra["index"] = coverage


def _fmt_duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    seconds = int(seconds)
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s" if m else f"{s}s"


def _fmt_index(value: Any) -> str:
    if not isinstance(value, dict):
        return str(value)
    text = f"{value['kind']} of {value['count']}"
    if value.get("not_indexed"):
        text += f", {value['not_indexed']} embeddings not indexed yet (run `exoray index`)"
    if value.get("stale"):
        text += f", {value['stale']} indexed images changed or deleted (run `exoray index`)"
    return text


def view_lines(store: Store, images: pa.Table) -> list[str]:
    """What `exoray map` and `exoray report` left in BASE (they are built from the phases, not
    phases themselves): one line per map and for the report, with when it was built.
    ``images``: the manifest's present images (read once by the caller)."""
    import datetime as dt

    from exoray.embedmap.build import map_staleness
    from exoray.embedmap.files import MAPS, read_pointer
    from exoray.report.builder import DEFAULT_OUT

    lines = []
    for entry in store.list_files(MAPS, suffix=".json"):
        family = entry.relpath[: -len(".json")]
        record = read_pointer(store, family) or {}
        stale = map_staleness(store, record, images) if record else "its record is unreadable"
        freshness = (f"out of date ({stale}): `exoray map {store.location} --model {family}` "
                     "rebuilds it") if stale else "up to date"
        lines.append(f"{'map ' + family:<14} {record.get('count', 0)} of {images.num_rows} "
                     f"images placed ({record.get('method_used', '?')}, {record.get('spec', '')}),"
                     f" built {str(record.get('created', '?'))[:16].replace('T', ' ')}; "
                     f"{freshness}")
    report = [e for e in store.list_files(DEFAULT_OUT, suffix="index.html")
              if e.relpath == "index.html"]
    if report:
        built = dt.datetime.fromtimestamp(report[0].mtime_ns / 1e9, dt.timezone.utc)
        lines.append(f"{'report':<14} {DEFAULT_OUT}/index.html, built {built:%Y-%m-%d %H:%M} "
                     f"UTC; `exoray report {store.location}` refreshes it")
    return lines


def format_status(st: StoreStatus) -> str:
    if st.image_root is None and not st.phases:
        return f"{st.base}: no manifest yet; run `exoray manifest {st.base} --images DIR`"
    lines = [f"BASE {st.base}", f"images  {st.images_present} present, {st.images_deleted} deleted "
             f"(root {st.image_root})"]
    if st.subset:
        lines.append(f"subset  {st.subset!r}: counts below are of the images it selects")
    for p in st.phases:
        pct = 100.0 * (p.done + p.errors) / p.total if p.total else 100.0
        line = (f"{p.phase:<14} {p.done}/{p.total} done, {p.errors} errors, {p.parts} parts "
                f"({pct:.0f}%)")
        if p.remaining and p.eta_seconds is not None:
            runs = f"{p.rate_runs} run{'s' if p.rate_runs != 1 else ''}"
            line += (f", ETA {_fmt_duration(p.eta_seconds)} at {p.rate:.1f} img/s over {runs}"
                     f" (~{p.sessions} session{'s' if p.sessions != 1 else ''} of "
                     f"{p.session_minutes:g} min)")
        if p.last_run:
            lr = p.last_run
            rate = f"{lr['images_per_s']:.1f} img/s" if lr.get("images_per_s") else "-"
            line += (f"; last run {lr['run_id']} {lr['status']}, started "
                     f"{lr['started_at']:%Y-%m-%d %H:%M}, took {_fmt_duration(lr['seconds'])}, "
                     f"{rate}")
        for key, value in p.extra.items():
            if key == "subset" and st.subset:
                continue
            shown = _fmt_index(value) if key == "index" else repr(value) if key == "subset" \
                else value
            line += f"; {key} {shown}"
        lines.append(line)
    return "\n".join(lines + st.views)
