"""Phase I: scanning rules, stable ids, incremental rescans."""

from __future__ import annotations

import os
import time

import pyarrow.compute as pc
import pytest

from exoray.image.ids import image_id
from exoray.image.manifest import read_manifest
from exoray.storage.store import Store
from pipelines import manifest


def touch(path, data=b"\xff\xd8fake"):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def by_relpath(base):
    t = read_manifest(Store(str(base)))
    return {r["relpath"]: r for r in t.to_pylist()}


def test_scan_rules(tmp_path):
    root = tmp_path / "imgs"
    touch(root / "a.jpg")
    touch(root / "UPPER.JPEG")
    touch(root / "sub" / "a.jpg")
    touch(root / "deep" / "er" / "x.TiFf")
    touch(root / "ünïcode ñame.png")
    touch(root / ".hidden.jpg")
    touch(root / "._a.jpg")
    touch(root / ".cache" / "b.jpg")
    touch(root / "bundle.jpg" / "inner.jpg")
    touch(root / "notes.txt")
    outside = touch(tmp_path / "outside" / "o.jpg")
    os.symlink(outside, root / "link_out.jpg")
    os.symlink(root / "a.jpg", root / "link_in.jpg")
    summary = manifest.run(tmp_path / "base", images=root)
    rows = by_relpath(tmp_path / "base")
    assert sorted(rows) == sorted(["a.jpg", "UPPER.JPEG", "sub/a.jpg", "deep/er/x.TiFf",
                                   "ünïcode ñame.png", "link_in.jpg"])
    assert summary.new == 6 and summary.present == 6
    assert rows["a.jpg"]["image_id"] != rows["sub/a.jpg"]["image_id"]
    assert rows["deep/er/x.TiFf"]["ext"] == "tiff"
    assert rows["a.jpg"]["image_id"] == image_id("a.jpg")  # stable: depends on relpath only


def test_ids_do_not_depend_on_mount_point(tmp_path):
    for name in ("mount1", "mount2"):
        touch(tmp_path / name / "x" / "y.png")
        manifest.run(tmp_path / f"base_{name}", images=tmp_path / name)
    a = by_relpath(tmp_path / "base_mount1")["x/y.png"]["image_id"]
    b = by_relpath(tmp_path / "base_mount2")["x/y.png"]["image_id"]
    assert a == b


def test_rescan_adds_requeues_and_marks_deleted(tmp_path):
    root = tmp_path / "imgs"
    touch(root / "keep.jpg")
    touch(root / "change.jpg")
    touch(root / "gone.jpg")
    base = tmp_path / "base"
    manifest.run(base, images=root)
    before = by_relpath(base)
    time.sleep(0.01)
    touch(root / "change.jpg", b"\xff\xd8 a longer different content")
    (root / "gone.jpg").unlink()
    touch(root / "new.jpg")
    summary = manifest.run(base)  # the root is remembered
    after = by_relpath(base)
    assert (summary.new, summary.changed, summary.deleted) == (1, 1, 1)
    assert after["gone.jpg"]["status"] == "deleted"
    assert after["change.jpg"]["fingerprint"] != before["change.jpg"]["fingerprint"]
    assert after["keep.jpg"] == before["keep.jpg"]
    touch(root / "gone.jpg")
    assert manifest.run(base).restored == 1
    t = read_manifest(Store(str(base)))
    assert pc.count_distinct(t["image_id"]).as_py() == t.num_rows == 4


def test_missing_root_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="--images"):
        manifest.run(tmp_path / "base", images=tmp_path / "nope")


def test_uri_base_and_root(tmp_path):
    touch(tmp_path / "imgs" / "a.png")
    summary = manifest.run(f"file://{tmp_path}/base", images=f"file://{tmp_path}/imgs")
    assert summary.present == 1
    assert by_relpath(tmp_path / "base")["a.png"]["bytes"] > 0


def test_scanning_many_files_is_fast(tmp_path):
    root = tmp_path / "many"
    for d in range(20):
        (root / f"d{d}").mkdir(parents=True)
        for i in range(250):
            (root / f"d{d}" / f"{i}.jpg").write_bytes(b"x")
    summary = manifest.run(tmp_path / "base", images=root)
    assert summary.present == 5000
    assert summary.seconds < 10
