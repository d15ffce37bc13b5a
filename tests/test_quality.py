"""`exoray issues` and exoray.explore.quality: issues found on the synthetic set match its truth."""

from __future__ import annotations

import csv
import importlib
import io
import json
import math
import shutil

import numpy as np
import pyarrow as pa
import pytest

from exoray.engine.schemas import FEATURES_SCHEMA
from exoray.explore import quality
from exoray.explore.quality import (
    ISSUES,
    Collection,
    find_issues,
    get_issue,
    parse_thresholds,
    threshold_names,
)


@pytest.fixture(scope="module")
def done_base(ray_session, synth_set, tmp_path_factory):
    """Phase I + II on the shared synthetic set, then duplicate grouping."""
    from pipelines import dupes, features, manifest

    root, truth = synth_set
    base = tmp_path_factory.mktemp("quality_base")
    manifest.run(base, images=root)
    features.run(base, part_rows=40, batch_size=8, show_progress=False)
    dupes.run(base)
    return base, truth


@pytest.fixture(scope="module")
def report(done_base):
    base, _ = done_base
    return find_issues(base)


def flagged(report, name: str) -> set[str]:
    return set(report.affected(name)["relpath"].to_pylist())


def truth_where(truth: dict, test) -> set[str]:
    return {rel for rel, t in truth["images"].items() if not t["corrupt"] and test(t)}


def cli(monkeypatch, capsys, *argv: str):
    """Run `exoray ARGV` through the real main(); quality commands added if not wired yet."""
    from exoray.cli.quality import add_quality_commands

    main_mod = importlib.import_module("exoray.cli.main")
    original = main_mod.build_parser

    def build():
        parser = original()
        sub = next(a for a in parser._actions if a.dest == "command")
        if "issues" not in sub.choices:
            add_quality_commands(sub, [main_mod._common()])
        return parser

    monkeypatch.setattr(main_mod, "build_parser", build)
    capsys.readouterr()
    rc = main_mod.main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


# -- the registry (no Ray) ------------------------------------------------------------------------
def test_registry_is_consistent():
    names = [i.name for i in ISSUES]
    assert len(names) == len(set(names))
    for issue in ISSUES:
        assert issue.help and issue.why and issue.direction in ("below", "above")
        assert set(issue.columns) <= set(FEATURES_SCHEMA.names), issue.name
        if isinstance(issue.score, str):
            assert issue.score in issue.columns
        if issue.threshold is not None:
            lo, hi = issue.bounds
            assert lo <= issue.threshold <= hi and issue.unit
    assert threshold_names() == [i.name for i in ISSUES if i.threshold is not None]
    assert {"dark", "light", "blurry", "low_information", "odd_aspect_ratio", "odd_size",
            "grayscale", "exact_duplicates", "near_duplicates"} <= set(names)


def test_parse_thresholds():
    assert parse_thresholds(None) == {}
    assert parse_thresholds(["dark=0.25", " blurry = 0.1 "]) == {"dark": 0.25, "blurry": 0.1}
    cases = {
        "nope=1": "unknown threshold 'nope'; valid threshold names: dark, light",
        "dark": "must be NAME=VALUE",
        "=1": "must be NAME=VALUE",
        "dark=abc": "not a number",
        "dark=nan": "not a number",
        "dark=1.5": "out of range",
        "tiny=0": "out of range",
        "grayscale=1": "yes/no and has no threshold",
    }
    for text, message in cases.items():
        with pytest.raises(ValueError, match=message) as info:
            parse_thresholds([text])
        assert "\n" not in str(info.value)
        if "valid" in message or "yes/no" in message:
            assert ", ".join(threshold_names()) in str(info.value)
    with pytest.raises(ValueError, match="unknown issue 'foo'; valid issues: dark"):
        get_issue("foo")


def test_scores_on_a_handmade_collection():
    feats = pa.table({
        "image_id": ["a", "b", "c", "d", "e", "f"],
        "width": [400, 410, 20, 4000, 390, 1200],
        "height": [300, 310, 20, 3000, 300, 300],
        "content_hash": ["h1", "h1", "h2", "h3", "h4", "h5"],
    })
    feats = pa.concat_tables([feats.slice(0, 1), feats.slice(1)])  # as parts read back: chunked
    dupes = pa.table({"image_id": ["a", "b", "d", "e", "gone"], "group_id": [0, 0, 1, 1, 1]})
    c = Collection(feats, dupes)
    # side vs the median side (~346 px): c is 17x smaller, d 10x larger
    odd = get_issue("odd_size")
    assert odd.flags(odd.scores(c), 0.2).tolist() == [False, False, True, True, False, False]
    aspect = get_issue("odd_aspect_ratio").scores(c)
    assert aspect[5] == pytest.approx(0.25) and aspect[2] == 1.0
    assert get_issue("tiny").flags(get_issue("tiny").scores(c), 32.0).tolist() == [
        False, False, True, False, False, False]
    exact = get_issue("exact_duplicates").scores(c)
    assert exact.tolist() == [1, 1, 0, 0, 0, 0]
    # group 0 is byte-identical copies only: not near; group 1 mixes contents: near
    near = get_issue("near_duplicates").scores(c)
    assert near.tolist() == [0, 0, 0, 1, 1, 0]


def test_focus_score_ignores_contrast_and_dark_images_are_not_blurry():
    feats = pa.table({"sharpness": [2.0, 40.0, 25.0, 0.0], "contrast": [0.1, 0.1, 0.03, 0.0]})
    scores = get_issue("blurry").scores(Collection(feats))
    # the same Laplacian variance means more edges on a low-contrast (dark) image
    assert scores[0] < 0.03 < scores[1] and scores[2] > 0.03 and scores[3] == 0.0
    assert not math.isnan(scores[3])


# -- the synthetic set (Phase II by Ray) ----------------------------------------------------------
def test_dark_light_grayscale_match_truth(done_base, report):
    _, truth = done_base
    dark = truth_where(truth, lambda t: t["exposure"] == "dark")
    light = truth_where(truth, lambda t: t["exposure"] == "light")
    gray = truth_where(truth, lambda t: t["grayscale"])
    assert dark and light and gray
    assert flagged(report, "dark") == dark
    assert flagged(report, "light") == light
    assert flagged(report, "grayscale") == gray
    assert report.images == len(truth_where(truth, lambda t: True))


def test_blurry_and_low_information_match_truth(done_base, report):
    _, truth = done_base
    blurred = truth_where(truth, lambda t: t["blurred"])
    flat = truth_where(truth, lambda t: t["flat"])
    got = flagged(report, "blurry")
    assert blurred <= got
    assert got - blurred <= flat  # a flat image has no edges either; nothing else is blurry
    assert flagged(report, "low_information") == flat


def test_duplicates_match_truth(done_base, report):
    _, truth = done_base
    exact = set()
    for rel, t in truth["images"].items():
        if t["exact_dup_of"]:
            exact |= {rel, t["exact_dup_of"]}
    near = truth_where(truth, lambda t: t["near_dup_group"] is not None)
    assert exact and near
    assert flagged(report, "exact_duplicates") == exact
    assert flagged(report, "near_duplicates") == near
    assert report.dupes_source == "features/dupes.parquet" and report.notes == []


def test_near_duplicates_without_dupes_file_are_grouped_on_the_fly(done_base, report, tmp_path):
    base, _ = done_base
    copy = tmp_path / "base"
    shutil.copytree(base, copy)
    (copy / "features" / "dupes.parquet").unlink()
    fresh = find_issues(copy, issues=["near_duplicates", "dark"])
    assert flagged(fresh, "near_duplicates") == flagged(report, "near_duplicates")
    assert "no features/dupes.parquet" in fresh.notes[0] and "exoray dupes" in fresh.notes[0]
    assert [r["issue"] for r in fresh.summary()] in (["near_duplicates", "dark"],
                                                     ["dark", "near_duplicates"])


def test_thresholds_move_the_flags(done_base, report):
    base, _ = done_base
    stricter = find_issues(base, {"dark": 0.2, "low_information": 0.0},
                           issues=["dark", "low_information"])
    assert flagged(stricter, "dark") < flagged(report, "dark")
    assert stricter.count("low_information") == 0
    assert stricter.thresholds == {"dark": 0.2, "low_information": 0.0}
    with pytest.raises(ValueError, match="out of range"):
        find_issues(base, {"light": -1})


def test_summary_is_sorted_by_prevalence_with_examples(report):
    rows = report.summary(examples=2)
    assert [r["issue"] for r in rows] and len(rows) == len(ISSUES)
    counts = [r["count"] for r in rows]
    assert counts == sorted(counts, reverse=True)
    for r in rows:
        assert len(r["examples"]) == min(2, r["count"])
        assert set(r["examples"]) <= flagged(report, r["issue"])
        assert r["share"] == pytest.approx(r["count"] / report.images, abs=1e-4)


def test_affected_is_worst_first(report):
    dark = report.affected("dark")["score"].to_numpy()
    light = report.affected("light")["score"].to_numpy()
    assert np.all(np.diff(dark) >= 0) and np.all(np.diff(light) <= 0)
    assert np.all(dark < 0.32) and np.all(light > 0.68)


# -- the command line -----------------------------------------------------------------------------
def test_cli_report_table_and_json(done_base, report, monkeypatch, capsys):
    base, _ = done_base
    rc, out, err = cli(monkeypatch, capsys, "issues", str(base))
    assert rc == 0 and err == ""
    lines = out.splitlines()
    assert lines[0].startswith(f"{report.images} images with Phase II features")
    order = [line.split()[0] for line in lines if line and not line.startswith(" ")][2:-1]
    assert order == [r["issue"] for r in report.summary()]
    assert "e.g. " in out and "--list ISSUE" in lines[-1]

    rc, out, _ = cli(monkeypatch, capsys, "issues", str(base), "--json", "--examples", "1",
                     "--threshold", "dark=0.2")
    data = json.loads(out)
    assert rc == 0 and data["images"] == report.images and data["thresholds"]["dark"] == 0.2
    by_name = {r["issue"]: r for r in data["issues"]}
    assert by_name["light"]["count"] == report.count("light")
    assert len(by_name["light"]["examples"]) == 1


def test_cli_list_table_csv_json_output(done_base, report, monkeypatch, capsys, tmp_path):
    base, _ = done_base
    dark = flagged(report, "dark")
    rc, out, _ = cli(monkeypatch, capsys, "issues", str(base), "--list", "dark")
    lines = out.splitlines()
    assert rc == 0 and lines[0].split() == ["score", "image_id", "relpath"]
    assert len(lines) == len(dark) + 2 and lines[-1].startswith(f"{len(dark)} of ")

    rc, out, _ = cli(monkeypatch, capsys, "issues", str(base), "--list", "dark", "--format", "csv")
    rows = list(csv.DictReader(io.StringIO(out)))
    assert rc == 0 and {r["relpath"] for r in rows} == dark
    assert list(rows[0]) == ["image_id", "relpath", "score"]
    assert all(0 <= float(r["score"]) < 0.32 for r in rows)

    rc, out, _ = cli(monkeypatch, capsys, "issues", str(base), "--list", "grayscale", "--json")
    data = json.loads(out)
    assert rc == 0 and {r["relpath"] for r in data} == flagged(report, "grayscale")

    target = tmp_path / "blurry.csv"
    rc, out, _ = cli(monkeypatch, capsys, "issues", str(base), "--list", "blurry", "--output",
                     str(target))
    assert rc == 0 and "wrote csv" in out
    assert {r["relpath"] for r in csv.DictReader(io.StringIO(target.read_text()))} == flagged(
        report, "blurry")


@pytest.mark.parametrize("argv, message", [
    (["--threshold", "foo=1"], "unknown threshold 'foo'; valid threshold names: dark"),
    (["--threshold", "dark=bright"], "not a number"),
    (["--threshold", "dark=7"], "out of range"),
    (["--threshold", "dark"], "must be NAME=VALUE"),
    (["--list", "fuzzy"], "unknown issue 'fuzzy'; valid issues:"),
    (["--format", "csv"], "--format and --output go with --list"),
])
def test_cli_bad_options_exit_2_with_one_line(done_base, monkeypatch, capsys, argv, message):
    base, _ = done_base
    rc, out, err = cli(monkeypatch, capsys, "issues", str(base), *argv)
    assert rc == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and message in err
    assert err.startswith("exoray issues: error: ")


def test_cli_missing_base_and_help(tmp_path, monkeypatch, capsys):
    rc, out, err = cli(monkeypatch, capsys, "issues", str(tmp_path / "nope"))
    assert rc == 2 and "does not exist" in err and len(err.strip().splitlines()) == 1
    rc, out, _ = cli(monkeypatch, capsys, "issues", "--help")
    assert rc == 0
    for issue in ISSUES:
        assert f"  {issue.name}: " in out
    assert quality.NEAR_MAX_DISTANCE == 6
