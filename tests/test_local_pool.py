"""Small Phase II runs without Ray: a local process pool with the same parts, errors and
kill safety as the Ray Data pipeline (and no Ray start-up, which cost more than the work)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.compute as pc
import pytest

from exoray.engine.errors_table import read_errors
from exoray.engine.executors import LOCAL_MAX_IMAGES, choose_executor
from exoray.engine.registry import get_phase
from exoray.engine.runlog import read_runs
from exoray.image.cheap_features import compute_features
from exoray.image.manifest import read_manifest
from exoray.storage import layout
from exoray.storage.parts import list_parts, read_parts
from exoray.storage.store import Store
from pipelines import features, manifest


def fresh_base(root: Path, base: Path) -> Path:
    manifest.run(base, images=root)
    return base


def exactly_once(base: Path) -> tuple[list[str], list[str]]:
    """Raw parts (no read-side deduplication): each manifest image once, as a row or an error."""
    store = Store(str(base))
    done = read_parts(store, layout.FEATURES)["image_id"].to_pylist()
    failed = read_parts(store, layout.errors_folder("features"))["image_id"].to_pylist()
    assert len(done) == len(set(done)) and len(failed) == len(set(failed))
    assert sorted(done + failed) == sorted(read_manifest(store)["image_id"].to_pylist())
    return done, failed


def test_a_local_run_writes_the_same_rows_as_the_stage_computes(synth_set, tmp_path):
    root, truth = synth_set
    base = fresh_base(root, tmp_path / "base")
    result = features.run(base, executor="local", part_rows=40, batch_size=8,
                          show_progress=False)
    done, failed = exactly_once(base)
    corrupt = {r for r, t in truth["images"].items() if t["corrupt"]}
    store = Store(str(base))
    assert set(read_errors(store, "features")["relpath"].to_pylist()) == corrupt
    assert (result.processed, result.errors) == (len(done), len(failed))
    # The first part is small (first results on disk within seconds), later ones full size.
    sizes = sorted(p.rows for p in list_parts(store, layout.FEATURES))
    assert sizes[0] <= 40 // 8 + 8 and max(sizes) >= 40
    rows = read_parts(store, layout.FEATURES).to_pylist()
    for row in rows[:12]:
        want = compute_features((root / row["relpath"]).read_bytes(), name=row["relpath"])
        assert {k: row[k] for k in want} == pytest.approx(want), row["relpath"]
    run = read_runs(store).to_pylist()[-1]
    assert run["status"] == "completed" and json.loads(run["options"])["executor"] == "local"
    assert features.run(base, executor="local", show_progress=False).run_id is None


def test_a_worker_killed_mid_batch_is_replaced_and_its_batch_redone(synth_set, tmp_path,
                                                                     monkeypatch):
    root, _ = synth_set
    base = fresh_base(root, tmp_path / "base")
    marker = tmp_path / "fired"
    monkeypatch.setenv("EXORAY_FAILPOINTS", f"local_batch_done=exit:{marker}")
    result = features.run(base, executor="local", part_rows=40, batch_size=8,
                          show_progress=False)
    assert marker.exists(), "no worker was killed"
    done, failed = exactly_once(base)
    assert not any(e == "worker" for e in read_errors(Store(str(base)), "features")["error"]
                   .to_pylist())
    assert result.processed == len(done)


def test_a_file_that_kills_its_worker_every_time_costs_only_its_own_row(synth_set, tmp_path,
                                                                         monkeypatch):
    root, truth = synth_set
    base = fresh_base(root, tmp_path / "base")
    poison = sorted(r for r, t in truth["images"].items() if not t["corrupt"])[5]
    monkeypatch.setenv("EXORAY_FAILPOINTS", f"local_image:{poison}=always:")
    features.run(base, executor="local", part_rows=40, batch_size=8, show_progress=False)
    done, failed = exactly_once(base)
    errors = read_errors(Store(str(base)), "features")
    worker = errors.filter(pc.equal(errors["error"], "worker")).to_pylist()
    assert [r["relpath"] for r in worker] == [poison]
    assert poison in worker[0]["message"] and "next run retries" in worker[0]["message"]
    # transient: the next run (the file no longer kills its worker) retries it by itself
    monkeypatch.delenv("EXORAY_FAILPOINTS")
    again = features.run(base, executor="local", show_progress=False)
    assert again.processed == 1
    feats = read_parts(Store(str(base)), layout.FEATURES)
    assert poison in feats["relpath"].to_pylist()


def test_driver_kill_9_mid_run_then_rerun_is_exactly_once(synth_set, tmp_path):
    root, _ = synth_set
    base = fresh_base(root, tmp_path / "base")
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    proc = subprocess.Popen([sys.executable, "-m", "exoray.cli.main", "features", str(base),
                             "--part-rows", "16", "--batch-size", "4", "-q"], env=env,
                            start_new_session=True, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    store = Store(str(base))
    deadline = time.time() + 120
    try:
        while time.time() < deadline and not list_parts(store, layout.FEATURES):
            assert proc.poll() is None, proc.stdout.read().decode(errors="replace")
            time.sleep(0.02)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the driver and its workers, mid-run
        proc.wait()
    first = len(read_parts(store, layout.FEATURES))
    assert 0 < first < 110
    done = subprocess.run([sys.executable, "-m", "exoray.cli.main", "features", str(base), "-q"],
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    exactly_once(base)
    runs = read_runs(store).to_pylist()
    assert [r["status"] for r in runs][-1] == "completed"


def test_max_minutes_stops_a_local_run_and_the_rerun_finishes(synth_set, tmp_path):
    root, _ = synth_set
    base = fresh_base(root, tmp_path / "base")
    result = features.run(base, executor="local", part_rows=8, batch_size=2,
                          max_minutes=0.004, show_progress=False)  # 0.24 s
    assert result.stopped == "time"
    assert result.processed + result.errors < result.todo
    assert read_runs(Store(str(base))).to_pylist()[-1]["status"] == "stopped"
    features.run(base, executor="local", show_progress=False)
    exactly_once(base)


def test_choosing_the_executor(monkeypatch):
    spec, embed = get_phase("features"), get_phase("embed")
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert choose_executor(spec, "auto", 500) == "local"
    assert choose_executor(spec, "auto", LOCAL_MAX_IMAGES + 1) == "ray"
    assert choose_executor(spec, "ray", 5) == "ray"
    assert choose_executor(embed, "auto", 5) == "ray"  # models, GPUs: always Ray
    with pytest.raises(ValueError, match="only for CPU phases"):
        choose_executor(embed, "local", 5)
    with pytest.raises(ValueError, match="auto, ray, local"):
        choose_executor(spec, "threads", 5)
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:6379")
    assert choose_executor(spec, "auto", 5) == "ray"  # a cluster was chosen: use it


def test_cli_executor_flag(synth_set, tmp_path):
    root, _ = synth_set
    base = fresh_base(root, tmp_path / "base")
    bad = subprocess.run([sys.executable, "-m", "exoray.cli.main", "features", str(base),
                          "--executor", "threads"], capture_output=True, text=True)
    assert bad.returncode == 2 and "--executor" in bad.stderr and "threads" in bad.stderr
    wrong = subprocess.run([sys.executable, "-m", "exoray.cli.main", "embed", str(base),
                            "--model", "clip:tiny", "--executor", "local"],
                           capture_output=True, text=True)
    assert wrong.returncode != 0 and "only for CPU phases" in wrong.stderr
    assert len(wrong.stderr.strip().splitlines()) <= 2


def test_a_worker_that_cannot_start_is_one_clear_error_not_error_rows(synth_set, tmp_path,
                                                                      monkeypatch):
    """A broken environment (here: the workers cannot import exoray) must not turn every image
    into a worker error row: the run stops with the worker's own last words."""
    root, _ = synth_set
    base = fresh_base(root, tmp_path / "base")
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(
        "import sys\nif sys.argv[-1:] == ['-m'] or 'local_worker' in ' '.join(sys.orig_argv):\n"
        "    raise SystemExit('exoray is not importable here (broken install)')\n")
    monkeypatch.setenv("PYTHONPATH", str(site))
    monkeypatch.delenv("EXORAY_VERBOSE", raising=False)  # -v shows the output instead
    with pytest.raises(RuntimeError, match="could not start .*broken install.*--executor ray"):
        features.run(base, executor="local", show_progress=False)
    assert read_parts(Store(str(base)), layout.errors_folder("features")).num_rows == 0
    assert read_runs(Store(str(base))).to_pylist()[-1]["status"] == "failed"
