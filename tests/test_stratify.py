"""Phase IV end to end: flags from real Phase II features on the synthetic set (ground truth),
subset selection for later phases, the manifest join, rules overrides and bad rules."""

from __future__ import annotations

import json
import shutil

import pyarrow.compute as pc
import pytest

from exoray.cli.main import main
from exoray.engine.subsets import latest_flags
from exoray.explore.subsets import flags_table, subsets_summary
from exoray.image.manifest import read_manifest
from exoray.storage.store import Store
from pipelines import dupes, embeddings, features, manifest, stratify


@pytest.fixture(scope="module")
def flagged(ray_session, synth_set, tmp_path_factory):
    root, truth = synth_set
    base = tmp_path_factory.mktemp("strat")
    manifest.run(base, images=root)
    features.run(base, part_rows=60, show_progress=False)
    dupes.run(base)
    result = stratify.run(base, show_progress=False)
    return base, root, truth, result


def by_relpath(base) -> dict[str, dict]:
    return {r["relpath"]: r for r in flags_table(str(base)).to_pylist()}


def precision_recall(rows: dict[str, dict], flag: str, truth_set: set[str]) -> tuple[float, float]:
    flagged = {r for r, row in rows.items() if row[flag]}
    hit = len(flagged & truth_set)
    return (hit / len(flagged) if flagged else 1.0), (hit / len(truth_set) if truth_set else 1.0)


def test_every_image_with_features_is_flagged_once(flagged):
    base, _, truth, result = flagged
    n_good = sum(not t["corrupt"] for t in truth["images"].values())
    assert result.processed == n_good
    flags = latest_flags(Store(str(base)))
    assert flags.num_rows == n_good and pc.count_distinct(flags["image_id"]).as_py() == n_good
    assert pc.count_distinct(flags["rules_version"]).as_py() == 1


@pytest.mark.parametrize("flag,truth_key,value", [
    ("dark", "exposure", "dark"), ("light", "exposure", "light"), ("grayscale", "grayscale", True),
    ("blurry", "blurred", True)])
def test_feature_flags_match_ground_truth(flagged, flag, truth_key, value):
    base, _, truth, _ = flagged
    rows = by_relpath(base)
    expected = {r for r, t in truth["images"].items()
                if not t["corrupt"] and t.get(truth_key) == value}
    precision, recall = precision_recall(rows, flag, expected)
    print(f"{flag}: precision {precision:.2f} recall {recall:.2f} ({len(expected)} true)")
    assert recall == 1.0 and precision >= 0.9, (flag, precision, recall)


def test_near_duplicate_flag_matches_ground_truth(flagged):
    base, _, truth, _ = flagged
    rows = by_relpath(base)
    expected = {r for r, t in truth["images"].items()
                if not t["corrupt"] and (t.get("near_dup_group") is not None or t.get("exact_dup_of"))}
    expected |= {t["exact_dup_of"] for t in truth["images"].values() if t.get("exact_dup_of")}
    precision, recall = precision_recall(rows, "near_duplicate", expected)
    print(f"near_duplicate: precision {precision:.2f} recall {recall:.2f}")
    assert recall >= 0.9 and precision >= 0.9


def test_flags_needing_clip_are_skipped_not_crashed(flagged):
    base, *_ = flagged
    summary = {f["flag"]: f for f in subsets_summary(str(base))["flags"]}
    assert summary["photo"]["not_computed"] == summary["photo"]["true"] + \
        summary["photo"]["false"] + summary["photo"]["not_computed"]  # none computed
    assert summary["dark"]["not_computed"] == 0


def test_flags_are_joined_into_the_manifest_and_survive_a_rescan(flagged, tmp_path):
    base, root, truth, _ = flagged
    work, images = tmp_path / "base", tmp_path / "images"
    shutil.copytree(base, work)
    shutil.copytree(root, images)
    manifest.run(work, images=images)  # new root: every image rescanned, flags kept
    table = read_manifest(Store(str(work)))
    assert "subset_dark" in table.column_names
    dark = {r["relpath"] for r in table.to_pylist() if r["subset_dark"]}
    assert dark == {r for r, t in truth["images"].items()
                    if not t["corrupt"] and t["exposure"] == "dark"}


def test_subset_selects_the_work_of_a_later_phase(flagged, tmp_path, monkeypatch):
    monkeypatch.setenv("EXORAY_MODELS_DIR", str(tmp_path / "models"))
    base, _, truth, _ = flagged
    work = tmp_path / "base"
    shutil.copytree(base, work)
    n_dark_or_light = sum(1 for t in truth["images"].values()
                          if not t["corrupt"] and t["exposure"] in ("dark", "light"))
    estimate = embeddings.run(work, ["clip:tiny"], subset="dark or light", estimate=True)
    assert estimate.todo == n_dark_or_light
    result = embeddings.run(work, ["clip:tiny"], subset="dark or light", batch_size=8,
                            show_progress=False)
    assert result.processed == n_dark_or_light


def test_subsets_command_and_bad_expressions(flagged, capsys):
    base, *_ = flagged
    assert main(["subsets", str(base), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert {"dark", "grayscale", "high_quality"} <= {f["flag"] for f in summary["flags"]}
    assert main(["features", str(base), "--subset", "darkk", "--estimate"]) == 2
    err = capsys.readouterr().err
    assert "darkk" in err and "dark" in err and len(err.strip().splitlines()) == 1
    assert main(["features", str(base), "--subset", "dark and (", "--estimate"]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


def test_print_rules_needs_no_base_and_overrides_change_the_version(flagged, tmp_path, capsys):
    base, *_ = flagged
    assert main(["stratify", "--print-rules"]) == 0
    assert "dark" in capsys.readouterr().out
    before = latest_flags(Store(str(base)))["rules_version"][0].as_py()
    work = tmp_path / "base"
    shutil.copytree(base, work)
    custom = tmp_path / "rules.yaml"
    custom.write_text("flags:\n  low_resolution:\n    threshold: 4000\n")
    assert main(["stratify", str(work), "--rules", str(custom), "-q"]) == 0
    assert "photo skipped" in capsys.readouterr().err  # no clip embeddings: said, not crashed
    flags = latest_flags(Store(str(work)))
    assert flags["rules_version"][0].as_py() != before
    assert pc.all(flags["low_resolution"]).as_py()  # every image is under 4000 px now
    bad = tmp_path / "bad.yaml"
    bad.write_text("flags:\n  dark:\n    threshhold: 0.2\n")
    assert main(["stratify", str(work), "--rules", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "threshhold" in err and "line" in err and len(err.strip().splitlines()) == 1


def test_images_whose_features_failed_are_errors_not_forever_to_do(flagged):
    base, _, truth, _ = flagged
    from exoray.engine.status import collect_status

    (st,) = [p for p in collect_status(str(base)).phases if p.phase == "stratify"]
    n_corrupt = sum(t["corrupt"] for t in truth["images"].values())
    assert (st.done, st.errors, st.remaining) == (st.total - n_corrupt, n_corrupt, 0)
