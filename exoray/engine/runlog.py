"""The run log ``logs/runs/``: append-only, one small JSON file per run start and per run end.

Nothing is ever read, modified and rewritten, so runs of different phases at the same time cannot
lose each other's records. A run with a start and no end is ``running`` while its phase lease is
alive, else ``interrupted`` (killed). Runs are rare, so the small files do not matter on Drive.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import secrets
from dataclasses import asdict, dataclass, field
from typing import Any

import pyarrow as pa

from exoray import __version__
from exoray.storage import layout
from exoray.storage.lease import live_holder
from exoray.storage.store import Store

RUN_SCHEMA = pa.schema([
    ("run_id", pa.string()),
    ("phase", pa.string()),
    ("status", pa.string()),
    ("started_at", pa.timestamp("ms", tz="UTC")),
    ("finished_at", pa.timestamp("ms", tz="UTC")),
    ("seconds", pa.float64()),
    ("todo", pa.int64()),
    ("processed", pa.int64()),
    ("errors", pa.int64()),
    ("images_per_s", pa.float64()),
    ("model_id", pa.string()),
    ("targets", pa.list_(pa.string())),
    ("options", pa.string()),
    ("events", pa.string()),
    ("host", pa.string()),
    ("exoray_version", pa.string()),
])


def new_run_id() -> str:
    """Sortable, unique run id: UTC time plus random suffix (letters and digits only)."""
    return dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%S") + secrets.token_hex(3)


def now_utc() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


@dataclass
class RunRecord:
    run_id: str
    phase: str
    started_at: dt.datetime
    todo: int = 0
    targets: list[str] = field(default_factory=list)
    options: dict[str, Any] = field(default_factory=dict)
    model_id: str | None = None
    status: str = "running"
    finished_at: dt.datetime | None = None
    processed: int = 0
    errors: int = 0
    events: list[dict[str, Any]] = field(default_factory=list)

    def _write(self, store: Store, kind: str) -> None:
        payload = asdict(self)
        payload.update(host=os.uname().nodename if hasattr(os, "uname") else "",
                       exoray_version=__version__)
        store.write_bytes_atomic(json.dumps(payload, default=str).encode(), layout.RUNS,
                                 f"{self.run_id}-{kind}.json")

    def record_start(self, store: Store) -> None:
        self._write(store, "start")

    def record_end(self, store: Store, status: str) -> None:
        self.status = status
        self.finished_at = now_utc()
        self._write(store, "end")

    def record_outcome(self, store: Store, status: str) -> None:
        """The end record with what this run committed, counted from part names (every
        executor ends the same way, also when killed by an exception)."""
        from exoray.engine.progress import rows_of_run

        self.processed = max((rows_of_run(store, f, self.run_id) for f in self.targets),
                             default=0)
        self.errors = rows_of_run(store, layout.errors_folder(self.phase), self.run_id)
        self.record_end(store, status)


def _time(value: Any) -> dt.datetime | None:
    return dt.datetime.fromisoformat(value) if value else None


def read_runs(store: Store) -> pa.Table:
    """One row per run (oldest first); unfinished runs are ``running`` or ``interrupted``."""
    records: dict[str, dict[str, Any]] = {}
    for entry in store.list_files(layout.RUNS, suffix=".json"):
        run_id, _, kind = entry.relpath[:-5].rpartition("-")
        try:
            rec = json.loads(store.read_bytes(layout.RUNS, entry.relpath))
        except (ValueError, FileNotFoundError):
            continue
        if kind == "end" or run_id not in records:
            records[run_id] = rec
    live = {}
    rows = []
    for run_id in sorted(records):
        rec = records[run_id]
        if rec["status"] == "running":
            phase = rec["phase"]
            if phase not in live:
                live[phase] = live_holder(store, phase)
            holder = live[phase]
            rec["status"] = "running" if holder and holder.get("run_id") == run_id else "interrupted"
        started, finished = _time(rec.get("started_at")), _time(rec.get("finished_at"))
        seconds = (finished - started).total_seconds() if started and finished else None
        done = (rec.get("processed") or 0) + (rec.get("errors") or 0)
        rows.append({
            **{k: rec.get(k) for k in ("run_id", "phase", "status", "todo", "processed", "errors",
                                       "model_id", "targets", "host", "exoray_version")},
            "started_at": started, "finished_at": finished, "seconds": seconds,
            "images_per_s": done / seconds if seconds and done else None,
            "options": json.dumps(rec.get("options") or {}, sort_keys=True),
            "events": json.dumps(rec.get("events") or []),
        })
    return pa.Table.from_pylist(rows, schema=RUN_SCHEMA)
