"""The run log ``manifests/jobs.parquet``: one row per phase run (started, then finished).

A row is written when a run starts (status ``running``) and replaced when it ends, so a killed
run stays visible as ``running`` with no end time; ``exoray status`` reports it as interrupted
once its parts stop growing.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import secrets
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from exoray import __version__
from exoray.storage import layout
from exoray.storage.staging import staging_file
from exoray.storage.store import Store

JOB_SCHEMA = pa.schema(
    [
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
        ("options", pa.string()),
        ("events", pa.string()),
        ("host", pa.string()),
        ("exoray_version", pa.string()),
    ]
)


def new_run_id() -> str:
    """Sortable, unique run id: UTC time plus random suffix (letters and digits only)."""
    return dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%S") + secrets.token_hex(3)


def now_utc() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


@dataclass
class JobRecord:
    run_id: str
    phase: str
    started_at: dt.datetime
    todo: int = 0
    options: dict[str, Any] = field(default_factory=dict)
    model_id: str | None = None
    status: str = "running"
    finished_at: dt.datetime | None = None
    processed: int = 0
    errors: int = 0
    events: list[dict[str, Any]] = field(default_factory=list)

    def row(self) -> dict[str, Any]:
        seconds = (self.finished_at - self.started_at).total_seconds() if self.finished_at else None
        rate = self.processed / seconds if seconds and self.processed else None
        return {
            "run_id": self.run_id,
            "phase": self.phase,
            "status": self.status,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "seconds": seconds,
            "todo": self.todo,
            "processed": self.processed,
            "errors": self.errors,
            "images_per_s": rate,
            "model_id": self.model_id,
            "options": json.dumps(self.options, default=str, sort_keys=True),
            "events": json.dumps(self.events, default=str),
            "host": os.uname().nodename if hasattr(os, "uname") else "",
            "exoray_version": __version__,
        }


def read_jobs(store: Store) -> pa.Table:
    if not store.exists(layout.JOBS):
        return JOB_SCHEMA.empty_table()
    with store.open_input_file(layout.JOBS) as f:
        return pq.read_table(f).cast(JOB_SCHEMA)


def record_job(store: Store, job: JobRecord) -> None:
    """Insert or replace ``job``'s row (read-modify-publish; the file is small).

    Starting a run (status ``running``) also marks earlier rows of its phase that are still
    ``running`` as ``interrupted``: they were killed mid-run, or this one could not start.
    """
    table = read_jobs(store)
    if table.num_rows:
        table = table.filter(pc.not_equal(table["run_id"], job.run_id))
        if job.status == "running":
            stale = pc.and_(pc.equal(table["phase"], job.phase),
                            pc.equal(table["status"], "running"))
            table = table.set_column(table.schema.get_field_index("status"), "status",
                                     pc.if_else(stale, pa.scalar("interrupted"), table["status"]))
    row = pa.Table.from_pylist([job.row()], schema=JOB_SCHEMA)
    table = pa.concat_tables([table, row]).sort_by("started_at")
    with staging_file(suffix=".parquet") as local:
        pq.write_table(table, local)
        store.publish_file(local, layout.JOBS)
