"""make_image_set: reproducible, and its truth.json describes exactly the files it wrote."""

from __future__ import annotations

import hashlib
import json
import unicodedata
from collections import Counter
from pathlib import Path

import pytest

from exoray.dev.synth import make_image_set
from exoray.image.decode import DecodeError, decode_image


def files_on_disk(root: Path) -> dict[str, str]:
    """relpath -> sha256 of every file except truth.json."""
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != "truth.json"
    }


@pytest.fixture(scope="module")
def full_set(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("set") / "images"
    return root, make_image_set(root, 120, seed=7, corrupt=True)


def test_truth_json_lists_exactly_the_files_written(full_set: tuple[Path, dict]) -> None:
    root, truth = full_set
    on_disk = json.loads((root / "truth.json").read_text("utf-8"))
    assert on_disk == truth
    assert (truth["seed"], truth["n"]) == (7, 120)
    assert set(files_on_disk(root)) == set(truth["images"])
    assert len(truth["images"]) == 120
    for rel in truth["images"]:
        assert "\\" not in rel and not rel.startswith("/")


def test_every_file_decodes_or_fails_as_the_truth_says(full_set: tuple[Path, dict]) -> None:
    root, truth = full_set
    for rel, t in truth["images"].items():
        data = (root / rel).read_bytes()
        if t["corrupt"]:
            with pytest.raises(DecodeError) as info:
                decode_image(data, name=rel)
            assert info.value.kind == t["decode_error"], rel
        else:
            img = decode_image(data, name=rel, max_side=64)
            assert (img.width, img.height, img.n_frames) == (t["width"], t["height"], t["n_frames"])


def test_special_files_are_present(full_set: tuple[Path, dict]) -> None:
    _, truth = full_set
    kinds = Counter(t["kind"] for t in truth["images"].values())
    bad = {"empty", "truncated", "random_bytes", "text_file", "bomb"}
    odd = {"cmyk", "gray16", "palette_alpha", "rgba", "exif_rotated", "animated_gif"}
    assert all(kinds[k] == 1 for k in bad | odd)
    assert {t["kind"] for t in truth["images"].values() if t["corrupt"]} == bad
    for kind in ("scene", "blurred", "dark", "light", "grayscale", "flat", "text", "near_dup"):
        assert kinds[kind] >= 1, kind
    assert kinds["exact_dup"] >= 1
    bomb = next(r for r, t in truth["images"].items() if t["kind"] == "bomb")
    assert (full_set[0] / bomb).stat().st_size < 2000  # declares 900 MP, stays tiny
    rotated = next(t for t in truth["images"].values() if t["kind"] == "exif_rotated")
    gif = next(t for t in truth["images"].values() if t["kind"] == "animated_gif")
    assert rotated["width"] and gif["n_frames"] > 1


def test_folders_and_names(full_set: tuple[Path, dict]) -> None:
    _, truth = full_set
    rels = list(truth["images"])
    assert max(rel.count("/") for rel in rels) >= 2  # nested sub-folders
    names = Counter(rel.rsplit("/", 1)[-1] for rel in rels)
    assert any(count >= 2 for count in names.values())  # same name, different folders
    unicode_names = [rel for rel in rels if not rel.isascii()]
    assert unicode_names and all(unicodedata.is_normalized("NFC", r) for r in unicode_names)
    assert {rel.rsplit(".", 1)[-1] for rel in rels} >= {"jpg", "png", "webp", "gif"}


def test_duplicates_and_near_duplicates(full_set: tuple[Path, dict]) -> None:
    root, truth = full_set
    images = truth["images"]
    for rel, t in images.items():
        if t["exact_dup_of"]:
            assert (root / rel).read_bytes() == (root / t["exact_dup_of"]).read_bytes()
            assert rel.rsplit("/", 1)[0] != t["exact_dup_of"].rsplit("/", 1)[0]
    groups: dict[int, list[str]] = {}
    for t in images.values():
        if t["near_dup_group"] is not None:
            groups.setdefault(t["near_dup_group"], []).append(t["variant"])
    assert groups
    for variants in groups.values():
        assert sorted(variants) == sorted(
            ["source", "resized", "recompressed", "cropped", "brightness"]
        )
    texts = [t["text"] for t in images.values() if t["kind"] == "text"]
    assert texts and all(isinstance(x, str) and x.strip() for x in texts)


def test_sizes_and_aspect_ratios(full_set: tuple[Path, dict]) -> None:
    _, truth = full_set
    sizes = [
        (t["width"], t["height"])
        for t in truth["images"].values()
        if not t["corrupt"] and t["kind"] != "near_dup"
    ]
    for w, h in sizes:
        assert min(w, h) >= 64 and w * h <= 3_000_000
        assert 1 / 3.05 <= w / h <= 3.05
    assert max(w * h for w, h in sizes) > 2_500_000  # at least one large image


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path: Path) -> None:
    a = make_image_set(tmp_path / "a", 30, seed=11, corrupt=True)
    b = make_image_set(tmp_path / "b", 30, seed=11, corrupt=True)
    c = make_image_set(tmp_path / "c", 30, seed=12, corrupt=True)
    assert a == b
    assert files_on_disk(tmp_path / "a") == files_on_disk(tmp_path / "b")
    assert files_on_disk(tmp_path / "a") != files_on_disk(tmp_path / "c")
    assert a != c


def test_benchmark_option_large_jpegs_only(tmp_path: Path) -> None:
    truth = make_image_set(tmp_path, 12, formats=("jpg",), min_megapixels=1.0, max_megapixels=1.5)
    for rel, t in truth["images"].items():
        assert rel.endswith(".jpg")
        if t["variant"] not in ("resized", "cropped"):
            assert 1_000_000 <= t["width"] * t["height"] <= 1_500_000, rel


def test_refuses_to_mix_into_a_non_empty_folder(tmp_path: Path) -> None:
    (tmp_path / "mine.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="not empty"):
        make_image_set(tmp_path, 5)
    assert (tmp_path / "mine.txt").read_text() == "keep me"


def test_overwrite_replaces_only_a_previous_set(tmp_path: Path) -> None:
    make_image_set(tmp_path / "s", 20, seed=1)
    with pytest.raises(FileExistsError, match="overwrite=True"):
        make_image_set(tmp_path / "s", 20, seed=2)
    (tmp_path / "s" / "notes.txt").write_text("user file")
    truth = make_image_set(tmp_path / "s", 10, seed=2, overwrite=True)
    assert set(files_on_disk(tmp_path / "s")) == set(truth["images"]) | {"notes.txt"}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"formats": ("bmp",)}, "choose from"),
        ({"n": 5, "corrupt": True}, "too small"),
        ({"n": 0}, "too small"),
        ({"min_megapixels": 2.0, "max_megapixels": 1.0}, "min_megapixels"),
        ({"min_side": 2000, "max_megapixels": 1.0}, "min_side"),
    ],
)
def test_bad_arguments_name_the_problem(tmp_path: Path, kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make_image_set(tmp_path / "x", **{"n": 20, **kwargs})
