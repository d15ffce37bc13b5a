"""Session-aware runs: --max-minutes stops cleanly with everything committed, and status tells
the rate, ETA and sessions left from every earlier run, killed ones included."""

from __future__ import annotations

import datetime as dt
import os
import time

import pyarrow as pa
import pytest

from exoray.cli.main import main as cli
from exoray.engine.budget import (
    HardStop,
    check_max_minutes,
    phase_rate,
    planned_images,
    sessions_needed,
)
from exoray.engine.doctor import check_base
from exoray.engine.runlog import RunRecord, read_runs
from exoray.engine.status import collect_status, format_status
from exoray.image.manifest import read_manifest
from exoray.storage import layout
from exoray.storage.parts import list_parts, read_parts, write_part
from exoray.storage.store import Store
from pipelines import features, manifest

PART_ROWS = 10


@pytest.fixture(scope="module")
def small_set(tmp_path_factory):
    """50 images, a few of them corrupt: enough for 5 parts of 10."""
    from exoray.dev.synth import make_image_set

    root = tmp_path_factory.mktemp("budget") / "images"
    make_image_set(root, n=50, seed=11, corrupt=True, max_megapixels=0.5)
    return root


@pytest.fixture()
def fresh_base(small_set, tmp_path):
    root = small_set
    base = tmp_path / "base"
    manifest.run(base, images=root)
    return base


def _earlier_run(store: Store, phase: str, folder: str, *, images: int, seconds: float) -> None:
    """An earlier finished run of ``phase`` on disk, as the run log records one."""
    started = dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=seconds)
    record = RunRecord(run_id="20200101T000000aaaaaa", phase=phase, started_at=started,
                       todo=images, targets=[folder], processed=images)
    record.record_start(store)
    record.record_end(store, "completed")


def _exactly_once(base) -> None:
    store = Store(str(base))
    ids = read_manifest(store)["image_id"].to_pylist()
    rows = read_parts(store, layout.FEATURES)["image_id"].to_pylist()
    errors = read_parts(store, layout.errors_folder("features"))["image_id"].to_pylist()
    assert len(rows) == len(set(rows))
    assert sorted(rows + errors) == sorted(ids)
    report = check_base(str(base))
    for folder in report["folders"]:
        assert not folder.get("duplicates") and not folder.get("temporaries"), folder


def test_max_minutes_takes_what_fits_at_the_earlier_rate(ray_session, fresh_base):
    store = Store(str(fresh_base))
    total = read_manifest(store).num_rows
    # An earlier run did 60 images in 300 s (0.2 img/s): 2 minutes fit 0.2 * 120 * 0.85 = 20.
    _earlier_run(store, "features", layout.FEATURES, images=60, seconds=300)
    result = features.run(fresh_base, part_rows=PART_ROWS, max_minutes=2, show_progress=False)
    assert result.stopped == "planned"
    assert result.processed + result.errors == 20
    assert result.todo == total
    assert "rerun the same command to continue" in str(result)
    assert f"{total - 20} images left" in str(result)
    again = features.run(fresh_base, part_rows=PART_ROWS, show_progress=False)
    assert again.processed + again.errors == total - 20 and not again.stopped
    _exactly_once(fresh_base)


def test_max_minutes_stops_a_late_run_at_the_limit_and_the_rerun_finishes(ray_session,
                                                                         fresh_base):
    store = Store(str(fresh_base))
    total = read_manifest(store).num_rows
    # No earlier run: nothing to plan with, so the limit stops the pipeline itself (here at
    # once: 0.001 min is spent before Ray has started the first stage).
    result = features.run(fresh_base, part_rows=PART_ROWS, max_minutes=0.001,
                          show_progress=False)
    assert result.stopped == "time"
    assert result.processed + result.errors < total
    runs = read_runs(store).to_pylist()
    assert [r["status"] for r in runs] == ["stopped"]
    committed = sum(p.rows for p in list_parts(store, layout.FEATURES))
    assert committed == result.processed
    again = features.run(fresh_base, part_rows=PART_ROWS, show_progress=False)
    assert again.processed + again.errors == total - result.processed - result.errors
    _exactly_once(fresh_base)


def test_hard_stop_interrupts_the_main_thread_once_the_budget_is_spent():
    started = time.monotonic()
    stop = HardStop(0.5 / 60)
    with pytest.raises(KeyboardInterrupt), stop:
        time.sleep(10)
    assert stop.fired and 0.4 < time.monotonic() - started < 5
    with HardStop(None) as idle:  # no limit: nothing fires
        time.sleep(0.05)
    assert not idle.fired


def test_rate_counts_killed_runs_by_their_committed_parts(tmp_path):
    store = Store(str(tmp_path / "base"))
    started = dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=1000)
    # A run whose kernel died: a start record, no end record, 2 parts committed.
    RunRecord(run_id="20260101T000000bbbbbb", phase="features", started_at=started,
              todo=100, targets=[layout.FEATURES]).record_start(store)
    for i in range(2):
        table = pa.table({"image_id": [f"id{i}-{j}" for j in range(25)],
                          "fingerprint": ["f"] * 25})
        write_part(store, layout.FEATURES, table, run_id="20260101T000000bbbbbb",
                   key=("image_id", "fingerprint"))
    newest = started + dt.timedelta(seconds=500)
    for part in list_parts(store, layout.FEATURES):
        os.utime(store.path(layout.FEATURES, part.name), (newest.timestamp(),) * 2)
    runs = read_runs(store)
    assert runs["status"].to_pylist() == ["interrupted"]
    rate = phase_rate(store, runs, "features", layout.FEATURES, layout.errors_folder("features"))
    assert rate.runs == 1 and rate.images == 50
    assert rate.images_per_s == pytest.approx(0.1, rel=0.01)
    assert sessions_needed(5000, 0.1, 180) == 5  # 50,000 s of 10,800 s sessions
    assert sessions_needed(0, 0.1, 180) == 0 and sessions_needed(10, None, 180) is None


def test_status_shows_rate_eta_and_sessions_across_runs(ray_session, fresh_base, capsys):
    store = Store(str(fresh_base))
    total = read_manifest(store).num_rows
    _earlier_run(store, "features", layout.FEATURES, images=60, seconds=300)
    features.run(fresh_base, part_rows=PART_ROWS, max_minutes=2, show_progress=False)
    st = collect_status(str(fresh_base), session_minutes=1)
    feats = next(p for p in st.phases if p.phase == "features")
    assert feats.rate_runs == 2 and feats.rate is not None and feats.remaining == total - 20
    assert feats.sessions == -(-feats.remaining // int(feats.rate * 60))
    assert cli(["status", str(fresh_base), "--session-minutes", "1"]) == 0
    out = capsys.readouterr().out
    assert "over 2 runs" in out and "session" in out and "of 1 min" in out
    text = format_status(collect_status(str(fresh_base)))  # default: the last --max-minutes
    assert "of 2 min)" in text


@pytest.mark.parametrize("value", [0, -3, "soon", float("nan"), True])
def test_bad_max_minutes_is_one_clear_error(value):
    with pytest.raises(ValueError, match="max_minutes must be a positive number"):
        check_max_minutes(value)


def test_cli_rejects_a_bad_max_minutes(fresh_base, capsys):
    assert cli(["features", str(fresh_base), "--max-minutes", "0"]) == 2
    assert "--max-minutes: '0' is not a positive number" in capsys.readouterr().err


def test_planned_images_are_whole_parts():
    assert planned_images(10, 1.0, 100) == 500  # 600 s * 0.85 = 510 images -> 5 parts
    assert planned_images(0.01, 1.0, 100) == 100  # at least one part
    assert planned_images(10, None, 100) is None

