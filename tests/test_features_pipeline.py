"""Phase II end to end on the synthetic set: one row per image, bad files in the errors table."""

from __future__ import annotations

import shutil

import pyarrow.compute as pc
import pytest

from exoray.engine.errors_table import read_errors
from exoray.engine.runlog import read_runs
from exoray.engine.status import collect_status
from exoray.image.manifest import read_manifest
from exoray.storage import layout
from exoray.storage.parts import list_parts, read_parts
from exoray.storage.store import Store
from pipelines import features, manifest


@pytest.fixture(scope="module")
def done_base(ray_session, synth_set, tmp_path_factory):
    root, truth = synth_set
    base = tmp_path_factory.mktemp("base")
    manifest.run(base, images=root)
    result = features.run(base, part_rows=40, batch_size=8, show_progress=False)
    return base, root, truth, result


def test_every_image_has_exactly_one_row_or_error(done_base):
    base, _, truth, result = done_base
    store = Store(str(base))
    ids = read_manifest(store)["image_id"].to_pylist()
    feats = read_parts(store, layout.FEATURES)
    errors = read_errors(store, "features")
    got = feats["image_id"].to_pylist() + errors["image_id"].to_pylist()
    assert sorted(got) == sorted(ids)
    assert result.processed == feats.num_rows and result.errors == errors.num_rows


def test_corrupt_files_are_errors_that_name_the_file(done_base):
    base, _, truth, _ = done_base
    errors = read_errors(Store(str(base)), "features")
    corrupt = {r for r, t in truth["images"].items() if t["corrupt"]}
    assert set(errors["relpath"].to_pylist()) == corrupt
    for row in errors.to_pylist():
        assert row["relpath"] in row["message"]
        assert row["error"] in {"empty", "truncated", "not_image", "bomb", "unsupported", "corrupt"}


def test_features_match_ground_truth(done_base):
    base, _, truth, _ = done_base
    feats = {r["relpath"]: r for r in read_parts(Store(str(base)), layout.FEATURES).to_pylist()}
    for rel, t in truth["images"].items():
        if t["corrupt"]:
            continue
        row = feats[rel]
        assert row["width"] > 0 and row["height"] > 0 and row["phash"] and row["content_hash"]
        assert row["run_id"] and row["exoray_version"]
        if t["grayscale"]:
            assert row["is_grayscale"], rel
    dark = [feats[r]["brightness"] for r, t in truth["images"].items()
            if not t["corrupt"] and t["exposure"] == "dark"]
    light = [feats[r]["brightness"] for r, t in truth["images"].items()
             if not t["corrupt"] and t["exposure"] == "light"]
    assert dark and light and max(dark) < min(light)


def test_parts_are_large_and_few(done_base):
    base, *_ = done_base
    parts = list_parts(Store(str(base)), layout.FEATURES)
    assert len(parts) <= 5  # 120 images, part_rows=40: a small first part, then one per actor share
    # The first part is small (first results on disk within seconds): 8 rows, a batch (more
    # than part_rows // 8); the other 112 rows are shared evenly by the actors.
    sizes = sorted(p.rows for p in parts)
    assert sizes[0] <= 8 and min(sizes[1:]) >= 20


def test_rerun_does_nothing_and_is_logged(done_base):
    base, *_ = done_base
    again = features.run(base, part_rows=40, batch_size=8, show_progress=False)
    assert again.todo == 0 and again.run_id is None and "nothing to do" in str(again)
    runs = read_runs(Store(str(base)))
    # A no-op rerun starts no Ray and leaves the last real run (and its rate) as it was.
    assert runs.num_rows == 1 and runs["status"].to_pylist() == ["completed"]
    assert runs["images_per_s"][0].as_py() > 0


def test_status_reports_done_errors_and_last_run(done_base):
    base, _, truth, _ = done_base
    st = collect_status(str(base))
    (feat,) = [p for p in st.phases if p.phase == "features"]
    n_corrupt = sum(t["corrupt"] for t in truth["images"].values())
    assert feat.total == len(truth["images"])
    assert feat.errors == n_corrupt and feat.done == feat.total - n_corrupt
    assert feat.remaining == 0 and feat.last_run["status"] == "completed"


def test_changed_file_is_requeued_and_retry_errors(done_base, tmp_path):
    base, root, truth, _ = done_base
    work = tmp_path / "copy"
    shutil.copytree(base, work)
    images = tmp_path / "images"
    shutil.copytree(root, images)
    manifest.run(work, images=images)
    good = next(r for r, t in truth["images"].items() if not t["corrupt"] and r.endswith(".png"))
    bad = next(r for r, t in truth["images"].items() if t["corrupt"])
    shutil.copyfile(images / next(r for r, t in truth["images"].items()
                                  if not t["corrupt"] and r.endswith(".jpg")), images / good)
    manifest.run(work)
    result = features.run(work, part_rows=40, batch_size=8, show_progress=False)
    assert result.todo == 1 and result.processed == 1
    retried = features.run(work, retry_errors=True, part_rows=40, batch_size=8,
                           show_progress=False)
    n_corrupt = sum(t["corrupt"] for t in truth["images"].values())
    assert retried.todo == n_corrupt and retried.errors == n_corrupt
    store = Store(str(work))
    feats = read_parts(store, layout.FEATURES)
    current = read_manifest(store)
    fp = dict(zip(current["image_id"].to_pylist(), current["fingerprint"].to_pylist(), strict=True))
    assert pc.sum(pc.equal(feats["relpath"], good)).as_py() == 2  # old + current fingerprint
    cur = [r for r in feats.to_pylist() if r["relpath"] == good and r["fingerprint"] == fp[r["image_id"]]]
    assert len(cur) == 1
    errors = read_errors(store, "features")
    assert bad in errors["relpath"].to_pylist()
    # --retry-errors that fails again replaces the error row instead of adding a second one.
    assert errors.num_rows == n_corrupt == len(set(errors["image_id"].to_pylist()))


def test_a_later_success_supersedes_an_error(done_base, tmp_path, capsys):
    """Every image refused (pixel limit), then retried with the default limit: nothing failing."""
    from exoray.cli.main import main

    base, root, truth, _ = done_base
    work = tmp_path / "base"
    manifest.run(work, images=root)
    refused = features.run(work, max_pixels=10, part_rows=40, batch_size=8, show_progress=False)
    n_corrupt = sum(t["corrupt"] for t in truth["images"].values())
    assert refused.processed == 0 and refused.errors == len(truth["images"])
    retried = features.run(work, retry_errors=True, part_rows=40, batch_size=8,
                           show_progress=False)
    assert retried.processed == len(truth["images"]) - n_corrupt
    (feat,) = [p for p in collect_status(str(work)).phases if p.phase == "features"]
    assert (feat.done, feat.errors) == (feat.total - n_corrupt, n_corrupt)  # never > 100 %
    assert main(["errors", str(work), "--phase", "features", "--json"]) == 0
    import json

    failing = json.loads(capsys.readouterr().out)
    assert len(failing) == n_corrupt


def test_a_run_leaves_other_phases_temporaries_and_run_records_alone(done_base, tmp_path):
    """Phases may run side by side: a run sweeps only its own folders; the run log only grows."""
    from exoray.engine.runlog import RunRecord, now_utc
    from exoray.storage.parts import TMP_PREFIX

    base, root, *_ = done_base
    work = tmp_path / "base"
    manifest.run(work, images=root)
    store = Store(str(work))
    other = f"{layout.errors_folder('embed')}/{TMP_PREFIX}live-part-of-an-embed-run.parquet"
    (work / other).parent.mkdir(parents=True)
    (work / other).write_bytes(b"an embed run is publishing this right now")
    RunRecord("20990101T000000abcdef", "embed", now_utc()).record_start(store)
    features.run(work, part_rows=40, batch_size=8, show_progress=False)
    assert (work / other).exists()
    runs = read_runs(store)
    assert sorted(runs["phase"].to_pylist()) == ["embed", "features"]


def test_rows_of_an_older_features_definition_are_recomputed(synth_set, tmp_path):
    """A BASE written before features_version existed (or with an older one): the next run
    redoes exactly those rows, readers then see only the current definition, doctor is happy."""
    import pyarrow as pa

    from exoray.engine.doctor import check_base
    from exoray.engine.readers import read_features
    from exoray.engine.schemas import FEATURES_SCHEMA
    from exoray.image.cheap_features import FEATURES_VERSION
    from exoray.storage.parts import write_part

    root, _ = synth_set
    base = tmp_path / "base"
    manifest.run(base, images=root)
    features.run(base, executor="local", show_progress=False)
    store = Store(str(base))
    current = read_parts(store, layout.FEATURES)
    for part in list_parts(store, layout.FEATURES):  # as an earlier exoray left the BASE
        store.delete(layout.FEATURES, part.name)
    old = current.drop_columns(["features_version"])
    old = old.set_column(old.schema.get_field_index("phash"), "phash",
                         pa.array(["0" * 16] * old.num_rows))
    old_schema = pa.schema([f for f in FEATURES_SCHEMA if f.name != "features_version"])
    write_part(store, layout.FEATURES, old, run_id="20250101T000000abcdef",
               key=("image_id", "fingerprint"), schema=old_schema)
    assert set(read_features(store, ["phash"])["phash"].to_pylist()) == {"0" * 16}
    before = collect_status(str(base))
    feats_status = next(p for p in before.phases if p.phase == "features")
    assert feats_status.done == 0 and "out of date" in feats_status.extra

    result = features.run(base, executor="local", show_progress=False)
    assert (result.todo, result.processed) == (current.num_rows, current.num_rows)
    feats = read_features(store, ["image_id", "phash", "features_version"])
    assert "0" * 16 not in feats["phash"].to_pylist()
    assert set(feats["features_version"].to_pylist()) == {FEATURES_VERSION}
    assert feats.num_rows == current.num_rows
    assert check_base(str(base))["healthy"]
    assert features.run(base, executor="local", show_progress=False).run_id is None
