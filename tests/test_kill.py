"""Kill -9 in the middle of a phase, rerun, compare with an uninterrupted run.

The 40-image set (29 pictures, 11 odd or broken files) in parts of 4 rows: about ten publishes per
output, so the SIGKILL lands after some parts and before the last."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.compute as pc
import pytest

from exoray.engine.errors_table import read_errors
from exoray.image.manifest import read_manifest
from exoray.index.embeddings import resolve_embeddings
from exoray.storage import layout
from exoray.storage.parts import list_parts, read_parts
from exoray.storage.store import Store
from pipelines import manifest

pytestmark = pytest.mark.slow
FEATURE_ARGS = ["--part-rows", "4", "--batch-size", "4", "-q"]


def exoray(*args: str, **kw) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    return subprocess.Popen([sys.executable, "-m", "exoray.cli.main", *args], env=env,
                            start_new_session=True, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, **kw)


def kill_after_first_part(base: Path, folder: str, args: list[str], timeout: float = 240) -> int:
    """Start a run, SIGKILL its whole process group once some (not all) parts are published."""
    proc = exoray(*args)
    store = Store(str(base))
    deadline = time.time() + timeout
    try:
        while time.time() < deadline:
            if proc.poll() is not None:
                out = proc.stdout.read().decode(errors="replace")
                pytest.fail(f"run finished before it could be killed:\n{out}")
            if list_parts(store, folder):
                break
            time.sleep(0.05)
        else:
            pytest.fail("no part was published in time")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    return len(list_parts(store, folder))


def run_to_end(*args: str) -> str:
    proc = exoray(*args)
    out, _ = proc.communicate(timeout=600)
    text = out.decode(errors="replace")
    assert proc.returncode == 0, text
    return text


def outcome(base: Path, folder: str, phase: str) -> tuple[list[str], list[str]]:
    store = Store(str(base))
    return (sorted(read_parts(store, folder)["image_id"].to_pylist()),
            sorted(read_errors(store, phase)["image_id"].to_pylist()))


def test_features_survive_kill_9(small_synth_set, tmp_path):
    root, _ = small_synth_set
    killed, clean = tmp_path / "killed", tmp_path / "clean"
    for base in (killed, clean):
        manifest.run(base, images=root)
    parts_at_kill = kill_after_first_part(killed, layout.FEATURES,
                                          ["features", str(killed), *FEATURE_ARGS])
    assert parts_at_kill >= 1
    run_to_end("features", str(killed), *FEATURE_ARGS)
    run_to_end("features", str(clean), *FEATURE_ARGS)
    ids_k, errs_k = outcome(killed, layout.FEATURES, "features")
    ids_c, errs_c = outcome(clean, layout.FEATURES, "features")
    all_ids = sorted(read_manifest(Store(str(killed)))["image_id"].to_pylist())
    assert len(ids_k) == len(set(ids_k)), "an image was written twice after the kill"
    assert sorted(ids_k + errs_k) == all_ids
    assert (ids_k, errs_k) == (ids_c, errs_c)
    fk = read_parts(Store(str(killed)), layout.FEATURES).sort_by("image_id")
    fc = read_parts(Store(str(clean)), layout.FEATURES).sort_by("image_id")
    for col in ("phash", "content_hash", "width", "sharpness"):
        assert fk[col].equals(fc[col]), col
    assert pc.count_distinct(fk["run_id"]).as_py() == 2  # work from before the kill was kept


EMBED_ARGS = ["--model", "clip:tiny", "--model", "dino:tiny", "--part-rows", "4",
              "--batch-size", "4", "-q"]


def test_embed_survives_kill_9(small_synth_set, tmp_path, monkeypatch):
    monkeypatch.setenv("EXORAY_MODELS_DIR", str(tmp_path / "models"))
    root, truth = small_synth_set
    base = tmp_path / "killed"
    manifest.run(base, images=root)
    manifest_store = Store(str(base))
    dino = embedding_folder_of(manifest_store, "dino:tiny")
    kill_after_first_part(base, dino, ["embed", str(base), *EMBED_ARGS])
    run_to_end("embed", str(base), *EMBED_ARGS)
    store = Store(str(base))
    good = sorted(r["image_id"] for r in read_manifest(store).to_pylist()
                  if not truth["images"][r["relpath"]]["corrupt"])
    for model in ("clip", "dino"):
        folder = resolve_embeddings(store, model).folder
        ids = sorted(read_parts(store, folder)["image_id"].to_pylist())
        assert ids == good, f"{model}: every good image exactly once after kill + rerun"
    errs = read_errors(store, "embed")["image_id"].to_pylist()
    assert len(errs) == len(set(errs)) == len(truth["images"]) - len(good)


def embedding_folder_of(store: Store, spec: str) -> str:
    """The folder a model's embeddings will be written to (from its description alone)."""
    from exoray.models import describe_backend
    from exoray.storage.layout import embeddings_folder

    name, _, variant = spec.partition(":")
    return embeddings_folder(name, describe_backend(name, variant=variant)["model_id"])
