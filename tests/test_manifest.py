"""Phase I: scanning rules, stable ids, incremental rescans."""

from __future__ import annotations

import importlib.util
import os
import time

import pyarrow.compute as pc
import pytest

from exoray.image.extensions import default_extensions, parse_extensions, resolve_extensions
from exoray.image.ids import image_id
from exoray.image.manifest import build_manifest, read_manifest, read_skipped
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


# -- unlistable folders, loops, skipped files, extension set, bad --images ----------------------
def skipped_rows(base):
    t = read_skipped(Store(str(base)))
    return {(r["relpath"], r["reason"]) for r in t.to_pylist()}


def fail_listing(monkeypatch, bad, *, after=None):
    """Make os.scandir fail for folder ``bad``: at once, or after yielding ``after`` entries."""
    real = os.scandir

    class Failing:
        def __init__(self, path):
            self.it = real(path)
            self.left = after

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.it.close()

        def __iter__(self):
            return self

        def __next__(self):
            if self.left == 0:
                raise OSError(5, "Input/output error")
            self.left -= 1
            return next(self.it)

    def fake(path="."):
        if os.fspath(path) == os.fspath(bad):
            if after is None:
                raise PermissionError(13, "Permission denied", os.fspath(path))
            return Failing(path)
        return real(path)

    monkeypatch.setattr(os, "scandir", fake)


@pytest.mark.parametrize("after", [None, 1])
def test_unlistable_folder_keeps_its_images(tmp_path, monkeypatch, after):
    root = tmp_path / "imgs"
    for rel in ("a/x.jpg", "a/y.jpg", "a/deep/z.jpg", "b/keep.jpg", "b/gone.jpg"):
        touch(root / rel)
    base = tmp_path / "base"
    manifest.run(base, images=root)
    (root / "b" / "gone.jpg").unlink()
    fail_listing(monkeypatch, root / "a", after=after)
    summary = manifest.run(base)
    rows = by_relpath(base)
    assert summary.unlistable == ("a/",)
    assert summary.deleted == 1 and rows["b/gone.jpg"]["status"] == "deleted"
    assert {rows[r]["status"] for r in ("a/x.jpg", "a/y.jpg", "a/deep/z.jpg")} == {"present"}
    assert summary.kept == (3 if after is None else 2)  # one entry came before the error
    assert summary.skipped["unlistable"] == 1
    assert ("a/", "unlistable") in skipped_rows(base)
    text = str(summary)
    assert "'a/'" in text and "could not list" in text and "\n" not in text
    monkeypatch.undo()
    assert manifest.run(base).unlistable == ()


def test_unlistable_root_is_a_one_line_error_and_changes_nothing(tmp_path, monkeypatch):
    root = tmp_path / "imgs"
    touch(root / "a.jpg")
    base = tmp_path / "base"
    manifest.run(base, images=root)
    fail_listing(monkeypatch, root)
    with pytest.raises(PermissionError) as info:
        manifest.run(base)
    msg = str(info.value)
    assert str(root) in msg and "force_remount" in msg and "\n" not in msg
    monkeypatch.undo()
    assert by_relpath(base)["a.jpg"]["status"] == "present"


def test_symlink_loops_list_each_file_once(tmp_path):
    root = tmp_path / "imgs"
    for rel in ("r.jpg", "a/1.jpg", "a/2.jpg", "a/b/3.jpg", "a/b/4.jpg", "a/b/c/5.jpg", "d/6.jpg"):
        touch(root / rel)
    os.symlink("..", root / "a" / "b" / "up")  # a/b/up -> a
    os.symlink("../..", root / "a" / "b" / "top")  # -> the root itself
    os.symlink("a/b", root / "alias")  # a second way into a/b: not a loop, still listed once
    os.symlink("../.store", root / "d" / "linked")  # a folder reached only through a link
    touch(root / ".store" / "7.jpg")
    summary = manifest.run(tmp_path / "base", images=root)
    rows = by_relpath(tmp_path / "base")
    assert sorted(rows) == sorted(["r.jpg", "a/1.jpg", "a/2.jpg", "a/b/3.jpg", "a/b/4.jpg",
                                   "a/b/c/5.jpg", "d/6.jpg", "d/linked/7.jpg"])
    assert sorted(summary.loops) == ["a/b/top/", "a/b/up/"]
    assert summary.skipped["loop"] == 2 and summary.skipped["already_scanned"] == 1
    assert {("a/b/up/", "loop"), ("alias/", "already_scanned")} <= skipped_rows(tmp_path / "base")
    assert "loop 2" in str(summary)


def test_skipped_files_are_counted_listed_and_written(tmp_path):
    root = tmp_path / "imgs"
    for rel in ("photo.jfif", "x.tga", "notes.txt", "README", ".DS_Store", "._a.jpg",
                ".cache/b.jpg", "bundle.jpg/inner.jpg", "doc.pdf", "scan.FITS", "p.MPO"):
        touch(root / rel)
    os.symlink(touch(tmp_path / "outside" / "o.jpg"), root / "link_out.jpg")
    os.symlink(root / "missing.jpg", root / "broken.jpg")
    summary = manifest.run(tmp_path / "base", images=root)
    assert sorted(by_relpath(tmp_path / "base")) == ["p.MPO", "photo.jfif", "x.tga"]
    expected = {("notes.txt", "unknown_extension"), ("README", "unknown_extension"),
                ("doc.pdf", "unknown_extension"), ("scan.FITS", "unknown_extension"),
                (".DS_Store", "hidden"), (".cache/", "hidden"), ("._a.jpg", "appledouble"),
                ("bundle.jpg/", "image_named_folder"), ("link_out.jpg", "outside_root"),
                ("broken.jpg", "broken_link")}
    assert skipped_rows(tmp_path / "base") == expected
    assert summary.skipped == {"unknown_extension": 4, "hidden": 2, "appledouble": 1,
                               "image_named_folder": 1, "outside_root": 1, "broken_link": 1}
    assert summary.skipped_extensions == {"txt": 1, "": 1, "pdf": 1, "fits": 1}
    assert set(summary.skipped_examples["hidden"]) == {".DS_Store", ".cache/"}
    text = str(summary)
    assert "\n" not in text and "skipped 10" in text
    assert "unknown_extension 4" in text and "hidden 2" in text and "broken_link 1" in text
    t = read_skipped(Store(str(tmp_path / "base")))
    assert t.schema.names == ["relpath", "reason", "detail"]
    touch(root / "notes.txt").unlink()
    manifest.run(tmp_path / "base")  # rewritten, not appended
    assert ("notes.txt", "unknown_extension") not in skipped_rows(tmp_path / "base")


def test_heic_and_avif_are_scanned_when_decoders_exist(tmp_path):
    root = tmp_path / "imgs"
    touch(root / "IMG_1234.HEIC")
    touch(root / "photo.avif")
    summary = manifest.run(tmp_path / "base", images=root)
    listed = set(by_relpath(tmp_path / "base"))
    exts = default_extensions()
    assert ("IMG_1234.HEIC" in listed) == ("heic" in exts)
    assert ("photo.avif" in listed) == ("avif" in exts)
    if "heic" not in exts:
        assert "pillow-heif" in str(summary)


def test_default_extensions_follow_pillow_minus_non_photos():
    exts = default_extensions()
    assert {"jpg", "jpeg", "jfif", "png", "gif", "tif", "tiff", "bmp", "webp", "tga", "dds",
            "psd", "ico", "ppm", "pgm", "pbm", "sgi", "pcx", "qoi", "mpo"} <= exts
    assert not {"pdf", "eps", "ps", "fits", "fit", "pcd", "h5", "mpg", "wmf", "gbr"} & exts
    if importlib.util.find_spec("pillow_heif") is not None:
        assert {"heic", "heif"} <= exts


def test_extension_set_is_configurable(tmp_path, monkeypatch):
    root = tmp_path / "imgs"
    for rel in ("a.jpg", "b.gif", "c.fits", "d.png"):
        touch(root / rel)
    monkeypatch.setenv("EXORAY_EXTENSIONS", "+.FITS, -gif")
    manifest.run(tmp_path / "base", images=root)
    assert sorted(by_relpath(tmp_path / "base")) == ["a.jpg", "c.fits", "d.png"]
    monkeypatch.setenv("EXORAY_EXTENSIONS", "jpg png")
    assert resolve_extensions() == {"jpg", "png"}
    store = Store(str(tmp_path / "base2"))
    summary = build_manifest(store, str(root), extensions=["PNG"])
    assert summary.present == 1 and summary.skipped["unknown_extension"] == 3
    assert parse_extensions("+fits,-gif") == (default_extensions() | {"fits"}) - {"gif"}
    with pytest.raises(ValueError, match="not a file extension"):
        parse_extensions("jpg,*.png")
    with pytest.raises(ValueError, match="no extension"):
        parse_extensions("jpg,-jpg")


def test_images_pointing_at_a_file_is_a_clear_error(tmp_path):
    f = touch(tmp_path / "imgs" / "a.jpg")
    with pytest.raises(NotADirectoryError, match="is a file, not a folder") as info:
        manifest.run(tmp_path / "base", images=f)
    assert str(tmp_path / "imgs") in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(NotADirectoryError, match="is a file"):
        manifest.run(tmp_path / "base", images=f"file://{f}")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        manifest.run(tmp_path / "base", images=f"file://{tmp_path}/nope")


def test_uri_scan_reports_skipped_folders_once(tmp_path):
    root = tmp_path / "imgs"
    for rel in ("a.png", ".cache/1.jpg", ".cache/2.jpg", "bundle.jpg/x.jpg", "n.txt"):
        touch(root / rel)
    summary = manifest.run(tmp_path / "base", images=f"file://{root}")
    assert summary.present == 1
    assert skipped_rows(tmp_path / "base") == {(".cache/", "hidden"),
                                               ("bundle.jpg/", "image_named_folder"),
                                               ("n.txt", "unknown_extension")}
