"""Exactly once on disk when real processes die at the worst moments of the commit protocol.

Each test kills or races real processes (a Ray write worker between two publishes, the whole run
between two publishes, two runs started together) and ends by checking every manifest image is
exactly once per output, or once in the errors table, on disk and through the readers. The
40-image set in parts of 10 rows gives 4 publishes per run, like 120 images in parts of 30.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from procs import finish, start

from exoray.engine.doctor import check_base
from exoray.engine.errors_table import read_errors
from exoray.engine.runlog import read_runs
from exoray.image.manifest import read_manifest
from exoray.storage import layout
from exoray.storage.parts import read_parts
from exoray.storage.store import Store
from pipelines import manifest

pytestmark = pytest.mark.slow
ARGS = ["--part-rows", "10", "--batch-size", "4"]


def assert_exactly_once(base: Path) -> None:
    """Raw parts on disk (no read-side deduplication) hold each image once: output or error."""
    store = Store(str(base))
    ids = sorted(read_manifest(store)["image_id"].to_pylist())
    done = read_parts(store, layout.FEATURES)["image_id"].to_pylist()
    failed = read_parts(store, layout.errors_folder("features"))["image_id"].to_pylist()
    assert len(done) == len(set(done)), "an image was published twice"
    assert len(failed) == len(set(failed)), "an error was published twice"
    assert sorted(done + failed) == ids
    assert sorted(read_errors(store, "features")["image_id"].to_pylist()) == sorted(failed)
    assert check_base(str(base))["healthy"]


@pytest.fixture
def base(small_synth_set, tmp_path):
    root, _ = small_synth_set
    manifest.run(tmp_path / "base", images=root)
    return tmp_path / "base"


def test_a_write_worker_killed_between_publishes_is_retried_by_ray(base, tmp_path):
    marker = tmp_path / "fired"
    code, out, err = finish(start("features", str(base), *ARGS, "-q", "--executor", "ray",
                                  failpoint=f"between_publishes=exit:{marker}"))
    assert marker.exists(), "the write worker was never killed"
    assert code == 0, err[-3000:]
    assert_exactly_once(base)


def test_a_run_killed_during_publish_then_rerun(base, tmp_path):
    marker = tmp_path / "fired"
    proc = start("features", str(base), *ARGS, "-q", failpoint=f"between_publishes=killpg:{marker}")
    code, _, _ = finish(proc)
    assert marker.exists() and code != 0  # the driver died with its workers mid-publish
    runs = read_runs(Store(str(base)))
    assert runs["status"].to_pylist() == ["interrupted"]
    code, out, err = finish(start("features", str(base), *ARGS, "-q"))
    assert code == 0, err[-3000:]
    assert_exactly_once(base)


def test_two_runs_started_at_once(base):
    procs = [start("features", str(base), *ARGS, "-q") for _ in range(2)]
    results = [finish(p) for p in procs]
    codes = sorted(code for code, _, _ in results)
    assert codes[0] == 0, results
    if codes[1] != 0:  # the second was refused (or fenced out): one line, no traceback
        (_, _, err), = [r for r in results if r[0] != 0]
        assert codes[1] == 2 and "Traceback" not in err, err[-3000:]
        assert "already running" in err or "took over" in err, err
    assert_exactly_once(base)


@pytest.mark.parametrize("executor", ["auto", "ray"])
def test_a_plain_run_is_quiet_and_ignores_the_cwd_and_a_stale_cluster_address(executor,
                                                                              small_synth_set,
                                                                              tmp_path):
    """One run of the console script users type, in the three situations that broke before:

    * quiet by default: nothing at all on stderr, the summary on stdout;
    * a BASE named like the package, in the current directory, must not shadow it in workers;
    * a dead `ray start --head` left its address behind: without RAY_ADDRESS we start fresh.

    With the default executor (a small run: the local pool) and with Ray's, where these broke.
    """
    import shutil
    import tempfile

    root, _ = small_synth_set
    base = tmp_path / "exoray"
    manifest.run(base, images=root)
    tmp = Path(tempfile.mkdtemp(prefix="xr", dir="/tmp"))  # Ray's socket paths must stay short
    (tmp / "ray").mkdir(parents=True)
    (tmp / "ray" / "ray_current_cluster").write_text("127.0.0.1:6999")  # nothing listens there
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env.update(TMPDIR=str(tmp), RAY_TMPDIR=str(tmp))
    script = str(Path(sys.executable).with_name("exoray"))
    try:
        proc = subprocess.run([script, "features", "exoray", "-q", *ARGS, "--executor", executor],
                              cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=600)
        # Ray's GCS prints this on the user's terminal only now and then; its log always has it
        gcs_logs = [p.read_text(errors="replace") for p in tmp.rglob("gcs_server.out")]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert not any("Failed to kill actor" in text for text in gcs_logs), \
        "an actor was still being created when the run ended"
    if executor == "ray":
        assert gcs_logs, "the run left no GCS log where RAY_TMPDIR points"
    noise = [line for line in proc.stderr.splitlines() if line.strip()]
    assert noise == [], "\n".join(noise[:20])
    assert "features:" in proc.stdout and "images done" in proc.stdout
    assert_exactly_once(base)
