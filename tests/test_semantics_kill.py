"""Phase V and Phase VI survive a real kill: the whole run (driver, raylet, workers) is SIGKILLed
between two publishes, then rerun; each image ends up exactly once, as a row or an error.

One task per stage path: detect stands for every Phase V task (ocr, sam and depth run the same
TaskDef spec, decode actor, TaskWorker and sink, each tested end to end in test_semantics*.py),
interpret for Phase VI (its own InterpretWorker and per-prompt targets)."""

from __future__ import annotations

import pytest
from procs import finish, start

from exoray.engine.doctor import check_base
from exoray.engine.runlog import read_runs
from exoray.image.manifest import read_manifest
from exoray.storage import layout
from exoray.storage.parts import read_parts
from exoray.storage.store import Store
from pipelines import detect, interpret, manifest

pytestmark = pytest.mark.slow
TASKS = {"detect": (detect.SPEC, ["--model", "yolo:tiny"]),
         "interpret": (interpret.SPEC, ["--prompt", "count_people", "--model", "vlm:tiny"])}


@pytest.mark.parametrize("task", sorted(TASKS))
def test_a_task_killed_mid_publish_then_rerun_is_exactly_once(task, real_photos, tmp_path):
    spec, model_args = TASKS[task]
    base = tmp_path / "base"
    manifest.run(base, images=real_photos)
    command = ["interpret", str(base)] if task == "interpret" else \
        ["semantics", str(base), "--task", task]
    args = [*command, *model_args, "--part-rows", "2", "--batch-size", "2", "-q"]
    marker = tmp_path / "fired"
    code, _, err = finish(start(*args, failpoint=f"between_publishes=killpg:{marker}"))
    assert marker.exists() and code != 0, err[-3000:]  # died mid-publish with its workers
    store = Store(str(base))
    assert read_runs(store)["status"].to_pylist() == ["interrupted"]
    code, out, err = finish(start(*args))
    assert code == 0, err[-3000:]
    assert "images done" in out
    (target,) = spec.discover(store)
    done = read_parts(store, target.folder)["image_id"].to_pylist()  # raw: no read-side dedup
    failed = read_parts(store, layout.errors_folder(task))["image_id"].to_pylist()
    assert len(done) == len(set(done)), "an image was published twice"
    assert len(failed) == len(set(failed)) == 2, "an error was published twice"
    assert sorted(done + failed) == sorted(read_manifest(store)["image_id"].to_pylist())
    assert check_base(str(base))["healthy"]
