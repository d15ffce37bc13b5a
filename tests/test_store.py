"""The commit protocol: atomic parts, sweep, quarantine, done-sets — local paths and URIs alike."""

from __future__ import annotations

import os

import pyarrow as pa
import pytest

from exoray.engine.done import count_done, done_keys, pending_mask
from exoray.storage.parts import list_parts, read_parts, sweep, write_part
from exoray.storage.store import Store


def table(ids, fp="1-1"):
    return pa.table({"image_id": ids, "fingerprint": [fp] * len(ids), "x": list(range(len(ids)))})


@pytest.fixture(params=["path", "uri"])
def store(request, tmp_path):
    base = tmp_path / "base"
    return Store(str(base)) if request.param == "path" else Store(f"file://{base}")


def test_published_part_is_complete_and_named_with_rows(store):
    info = write_part(store, "features/global", table(["a", "b", "c"]), run_id="r1", task=3, seq="ab")
    assert info.rows == 3
    (part,) = list_parts(store, "features/global")
    assert part.name == info.name and part.run_id == "r1" and part.rows == 3
    assert read_parts(store, "features/global")["image_id"].to_pylist() == ["a", "b", "c"]


def test_sweep_removes_temporaries_and_quarantines_unreadable_parts(store, tmp_path):
    write_part(store, "f", table(["a"]), run_id="r1", task=0, seq="01")
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(b"PAR1 this is not parquet")
    store.publish_file(str(bad), "f", "part-r2-00000-02-n5.parquet")
    store.publish_file(str(bad), "f", ".tmp-123-part-r3-00000-03-n1.parquet")
    result = sweep(store, "f")
    assert result == {"removed_temporary": 1, "quarantined": 1}
    assert [p.run_id for p in list_parts(store, "f")] == ["r1"]
    assert store.exists("quarantine", "f", "part-r2-00000-02-n5.parquet")


def test_part_with_wrong_row_count_in_name_is_quarantined(store, tmp_path):
    info = write_part(store, "f", table(["a", "b"]), run_id="r1", task=0, seq="01")
    store.move(("f", info.name), ("f", info.name.replace("-n2.", "-n9.")))
    assert sweep(store, "f")["quarantined"] == 1
    assert read_parts(store, "f").num_rows == 0


def test_done_set_is_keyed_by_fingerprint(store):
    write_part(store, "f", table(["a", "b"], fp="10-1"), run_id="r1", task=0, seq="01")
    images = pa.table({"image_id": ["a", "b", "c"], "fingerprint": ["10-1", "99-2", "1-1"]})
    done = done_keys(store, "f")
    assert count_done(images, done) == 1  # b changed on disk, c is new
    assert images.filter(pending_mask(images, done))["image_id"].to_pylist() == ["b", "c"]


def test_missing_folder_reads_as_empty(store):
    assert list_parts(store, "nothing/here") == []
    assert read_parts(store, "nothing/here", ["image_id"]).num_rows == 0


def test_publish_never_leaves_partial_file_on_failure(tmp_path, monkeypatch):
    store = Store(str(tmp_path / "b"))
    src = tmp_path / "src.bin"
    src.write_bytes(b"x" * 1000)

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        store.publish_file(str(src), "f", "final.bin")
    assert os.listdir(tmp_path / "b" / "f") == []


def test_done_set_of_a_million_ids_is_fast(tmp_path):
    """Resume start-up stays cheap: 1M ids in 1000 parts (the benchmark measures the time)."""
    store = Store(str(tmp_path / "b"))
    ids = [f"{i:016x}" for i in range(20_000)]
    for k in range(20):
        write_part(store, "f", table(ids[k * 1000:(k + 1) * 1000]), run_id="r", task=k, seq="00")
    assert len(done_keys(store, "f")) == 20_000


def test_reading_parts_quarantines_corrupt_ones_so_their_images_are_redone(store, tmp_path):
    write_part(store, "f", table(["a", "b"]), run_id="r1", task=0, seq="01")
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(b"not parquet at all")
    store.publish_file(str(bad), "f", "part-r2-00000-02-n3.parquet")
    assert sweep(store, "f", verify=False) == {"removed_temporary": 0, "quarantined": 0}
    assert sorted(done_keys(store, "f").to_pylist()) == ["a|1-1", "b|1-1"]
    assert [p.run_id for p in list_parts(store, "f")] == ["r1"]
    assert store.exists("quarantine", "f", "part-r2-00000-02-n3.parquet")


def test_a_superseded_run_cannot_publish(store):
    from exoray.storage.lease import Fence, LeaseLost, take_lease

    take_lease(store, "features", "old")
    fence = Fence(store, "features", "old")
    write_part(store, "f", table(["a"]), run_id="old", task=0, seq="01", before_publish=fence)
    take_lease(store, "features", "new")  # a rerun started after a kill
    with pytest.raises(LeaseLost, match="took over"):
        write_part(store, "f", table(["b"]), run_id="old", task=0, seq="02", before_publish=fence)
    assert read_parts(store, "f")["image_id"].to_pylist() == ["a"]
