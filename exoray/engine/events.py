"""Rare run events (e.g. an out-of-memory batch-size backoff) raised inside Ray actors.

Actors cannot reach the driver's job record, so each event is published as one small JSON file
under ``logs/events/``; the runner folds the run's events into its run-log end record.
Events are rare, so the small writes do not matter even on Drive.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

from exoray.storage.layout import EVENTS
from exoray.storage.store import Store


def record_event(store: Store, run_id: str, event: dict[str, Any]) -> None:
    stamp = time.time_ns()
    name = f"{run_id}-{stamp}-{uuid.uuid4().hex[:6]}.json"
    payload = {"time_ns": stamp, **event}
    store.write_bytes_atomic(json.dumps(payload, default=str).encode(), EVENTS, name)


def forward_backend_events(store: Store, run_id: str, backend: Any, seen: int,
                           **tags: str) -> int:
    """Publish the events a model backend recorded since ``seen`` (e.g. OOM backoffs), tagged;
    returns the new count seen. Model actors call it after each batch."""
    events = getattr(backend, "events", [])
    for event in events[seen:]:
        record_event(store, run_id, {**tags, **event})
    return len(events)


def read_events(store: Store, run_id: str) -> list[dict[str, Any]]:
    events = []
    for entry in store.list_files(EVENTS, suffix=".json"):
        if entry.relpath.startswith(run_id + "-"):
            events.append(json.loads(store.read_bytes(EVENTS, entry.relpath)))
    return sorted(events, key=lambda e: e.get("time_ns", 0))
