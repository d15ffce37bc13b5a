"""exoray report after Phase II alone: sections, galleries with their CSVs, thumbnails kept in a
few parts and reused, errors with their fix, bad input."""

from __future__ import annotations

import csv
import io
import json
import math
import os
import shutil

import pyarrow as pa
import pytest

from exoray.cli.main import main
from exoray.explore.quality import find_issues
from exoray.image.manifest import read_manifest
from exoray.report import build_report
from exoray.report.thumbs import THUMBS, ensure_thumbnails, make_thumbnail
from exoray.storage.parts import list_parts
from exoray.storage.store import Store
from pipelines import dupes, features, manifest


@pytest.fixture(scope="module")
def phase2_base(ray_session, synth_set, tmp_path_factory):
    """Manifest, Phase II and duplicates of the shared synthetic set: nothing else."""
    root, truth = synth_set
    base = tmp_path_factory.mktemp("report-base")
    manifest.run(base, images=root)
    features.run(base, part_rows=60, show_progress=False)
    dupes.run(base)
    return base, root, truth


def read_data(out) -> dict:
    text = (out / "data.js").read_text()
    prefix = "window.EXORAY_REPORT = "
    assert text.startswith(prefix)
    return json.loads(text[len(prefix):].rstrip().rstrip(";"))


def read_csv(path) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(path.read_text())))


def blocks(data: dict, section: str) -> list[dict]:
    return next(s for s in data["sections"] if s["id"] == section)["blocks"]


def galleries(data: dict) -> list[dict]:
    return [b for s in data["sections"] for b in s["blocks"] if b["type"] == "gallery"]


@pytest.fixture(scope="module")
def report(phase2_base, tmp_path_factory):
    base, _, _ = phase2_base
    result = build_report(base)
    return base, result, read_data(base / "reports" / "latest")


def test_after_phase_two_alone_the_report_shows_what_exists_and_says_what_to_run(report):
    base, result, data = report
    out = base / "reports" / "latest"
    assert result.index == str(out / "index.html")
    assert result.sections == ["overview", "quality", "duplicates", "subsets", "embeddings",
                               "errors"]
    texts = " ".join(b["text"] for s in data["sections"] for b in s["blocks"]
                     if b["type"] == "text")
    assert f"run `exoray stratify {base}`" in texts
    assert f"run `exoray embed {base} --model clip`" in texts
    overview = blocks(data, "overview")[1]
    features_row = next(r for r in overview["rows"] if r[0] == "features")
    manifest_rows = read_manifest(Store(str(base))).num_rows
    assert features_row[2] == manifest_rows and features_row[1] + features_row[4] == manifest_rows
    hist = next(b for b in blocks(data, "quality") if b["type"] == "histograms")
    assert {h["title"] for h in hist["items"]} >= {"brightness", "sharpness", "entropy", "size"}
    assert all(sum(h["counts"]) == features_row[1] for h in hist["items"]
               if h["title"] in ("brightness", "entropy"))
    # The folder is a handful of files: no file per image.
    files = [p for p in out.rglob("*") if p.is_file()]
    assert len(files) == len(result.files) < 40
    assert len(list((out / "sprites").iterdir())) == result.sheets == 1


def test_issue_galleries_are_capped_and_their_csv_lists_every_image_worst_first(phase2_base,
                                                                             tmp_path):
    base, _, _ = phase2_base
    build_report(base, tmp_path / "small", max_per_gallery=2)
    data = read_data(tmp_path / "small")
    issues = find_issues(base)
    checked = 0
    for name in ("blurry", "dark", "grayscale"):
        expected = issues.affected(name)["relpath"].to_pylist()
        gallery = next(g for g in galleries(data) if g["title"].startswith(f"{name}:"))
        assert gallery["count"] == len(expected) > 2
        assert [i["p"] for i in gallery["items"]] == expected[:2]
        rows = read_csv(tmp_path / "small" / gallery["csv"])
        assert [r["relpath"] for r in rows] == expected
        checked += 1
    assert checked == 3


def test_every_shown_image_that_decodes_has_a_tile_and_thumbnails_are_reused(report, tmp_path):
    base, result, data = report
    shown = {i["t"] for g in galleries(data) for i in g["items"]}
    assert shown and set(data["tiles"]) == shown
    store = Store(str(base))
    parts = list_parts(store, THUMBS)
    assert sum(p.rows for p in parts) == result.thumbnails_made == len(shown)
    assert len(parts) <= math.ceil(len(shown) / 256) + 1
    again = build_report(base, tmp_path / "again")
    assert again.thumbnails_made == 0
    assert read_data(tmp_path / "again")["tiles"] == data["tiles"]


def test_a_changed_file_gets_a_new_thumbnail(report, tmp_path):
    base, _, data = report
    shutil.copytree(base / THUMBS, tmp_path / THUMBS)
    store = Store(str(tmp_path))  # a copy: the shared BASE keeps its thumbnails as they are
    images = read_manifest(Store(str(base))).select(["image_id", "relpath", "fingerprint"])
    shown_id = next(iter(data["tiles"]))
    row = images.filter(pa.compute.equal(images["image_id"], shown_id))
    _, made = ensure_thumbnails(store, str(read_root(base)), row)
    assert made == 0
    changed = row.set_column(2, "fingerprint", pa.array(["123:456"], pa.string()))
    thumbs, made = ensure_thumbnails(store, str(read_root(base)), changed)
    assert made == 1 and thumbs[shown_id].width <= 128 and thumbs[shown_id].height <= 128
    assert sum(p.rows for p in list_parts(store, THUMBS)) == len(data["tiles"]) + 1


def test_duplicate_groups_put_the_keeper_first_with_distances(report):
    base, _, data = report
    groups = next(b for b in blocks(data, "duplicates") if b["type"] == "groups")
    listing = dupes.list_duplicates(base).table
    assert groups["count"] == listing.num_rows
    for group in groups["groups"]:
        labels = [i["l"] for i in group["items"]]
        assert labels[0].startswith("keep")
        assert all(" bits" in label for label in labels[1:])
    rows = read_csv(base / "reports" / "latest" / groups["csv"])
    assert sorted(r["relpath"] for r in rows) == sorted(listing["relpath"].to_pylist())


def test_errors_list_every_broken_file_with_a_fix(report):
    base, _, data = report
    truth = json.loads((read_root(base) / "truth.json").read_text())
    corrupt = {rel for rel, t in truth["images"].items() if t["corrupt"]}
    table = next(b for b in blocks(data, "errors") if b["type"] == "table")
    feature_rows = [r for r in table["rows"] if r[0] == "features"]
    assert sum(r[2] for r in feature_rows) == len(corrupt)
    assert all(r[3] and not r[3].startswith("see the message") for r in feature_rows)
    listed = read_csv(base / "reports" / "latest" / table["csv"])
    assert {r["relpath"] for r in listed if r["phase"] == "features"} == corrupt
    assert "truth.json" in {r["relpath"] for r in listed if r["phase"] == "manifest"}


def read_root(base):
    from pathlib import Path

    return Path(read_manifest(Store(str(base))).schema.metadata[b"exoray.root"].decode())


def test_an_earlier_reports_leftovers_are_removed_others_kept(phase2_base, tmp_path):
    base, _, _ = phase2_base
    out = tmp_path / "r"
    (out / "lists").mkdir(parents=True)
    (out / "lists" / "old.csv").write_text("relpath\n")
    (out / "sprites").mkdir()
    (out / "sprites" / "sheet-099.webp").write_bytes(b"x")
    (out / "notes.txt").write_text("mine")
    build_report(base, out)
    assert not (out / "lists" / "old.csv").exists()
    assert not (out / "sprites" / "sheet-099.webp").exists()
    assert (out / "notes.txt").read_text() == "mine"


def test_a_uri_base_is_written_through_the_store(phase2_base, tmp_path):
    base, _, _ = phase2_base
    copy = tmp_path / "copy"
    shutil.copytree(base, copy, ignore=shutil.ignore_patterns("reports"))
    result = build_report(f"file://{copy}", max_per_gallery=4)
    assert result.out == f"file://{copy}/reports/latest"
    assert (copy / "reports" / "latest" / "index.html").is_file()
    assert read_data(copy / "reports" / "latest")["base"] == f"file://{copy}"


def test_thumbnail_keeps_the_aspect_and_refuses_non_images():
    import numpy as np
    from PIL import Image

    from exoray.image.decode import DecodeError

    buf = io.BytesIO()
    Image.fromarray(np.zeros((100, 400, 3), np.uint8)).save(buf, format="PNG")
    thumb = make_thumbnail(buf.getvalue(), "wide.png")
    assert (thumb.width, thumb.height) == (128, 32) and thumb.image().size == (128, 32)
    with pytest.raises(DecodeError, match="notes.jpg"):
        make_thumbnail(b"not an image", "notes.jpg")


def test_bad_input_is_a_one_line_error(phase2_base, tmp_path, capsys):
    base, _, _ = phase2_base
    with pytest.raises(ValueError, match="max_per_gallery must be a positive integer"):
        build_report(base, tmp_path / "x", max_per_gallery=0)
    with pytest.raises(FileNotFoundError, match="exoray manifest"):
        build_report(tmp_path)
    assert main(["report", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "does not exist" in err
    assert main(["report", str(base), "--max-per-gallery", "0"]) == 2


def test_cli_writes_the_report_where_asked(phase2_base, tmp_path, capsys):
    base, _, _ = phase2_base
    out = tmp_path / "cli"
    assert main(["report", str(base), "--out", str(out), "--max-per-gallery", "5"]) == 0
    printed = capsys.readouterr().out
    assert str(out / "index.html") in printed
    assert os.path.isfile(out / "index.html") and os.path.isfile(out / "report.js")
    assert all(len(g["items"]) <= 5 for g in galleries(read_data(out)))


def test_status_shows_the_report_and_how_to_refresh_it(report):
    from exoray.engine.status import collect_status, format_status

    base, _, _ = report
    text = format_status(collect_status(str(base)))
    line = next(ln for ln in text.splitlines() if ln.startswith("report"))
    assert "reports/latest/index.html, built 20" in line
    assert f"`exoray report {base}`" in line
