"""The commit protocol: atomic parts, sweep, quarantine, done-sets — local paths and URIs alike."""

from __future__ import annotations

import json
import os

import pyarrow as pa
import pytest

from exoray.engine.done import count_done, done_keys, pending_mask
from exoray.storage.parts import (
    PartReadError,
    SchemaError,
    list_parts,
    read_parts,
    sweep,
    write_part,
)
from exoray.storage.store import Store


def table(ids, fp="1-1"):
    return pa.table({"image_id": ids, "fingerprint": [fp] * len(ids), "x": list(range(len(ids)))})


@pytest.fixture(params=["path", "uri"])
def store(request, tmp_path):
    base = tmp_path / "base"
    return Store(str(base)) if request.param == "path" else Store(f"file://{base}")


KEY = ("image_id", "fingerprint")


def put(store, folder, ids, run_id="r1", fp="1-1"):
    return write_part(store, folder, table(ids, fp), run_id=run_id, key=KEY)


def test_published_part_is_complete_and_named_with_rows(store):
    info = put(store, "features/global", ["a", "b", "c"])
    assert info.rows == 3
    (part,) = list_parts(store, "features/global")
    assert part.name == info.name and part.run_id == "r1" and part.rows == 3
    assert read_parts(store, "features/global")["image_id"].to_pylist() == ["a", "b", "c"]


def test_a_retried_write_republishes_the_same_name(store):
    """Part names come from the rows' keys: a retry of the same bundle cannot add a copy."""
    first = put(store, "f", ["a", "b", "c"])
    again = write_part(store, "f", table(["c", "a", "b"]), run_id="r1", key=KEY)  # any order
    assert again.name == first.name and len(list_parts(store, "f")) == 1
    other = put(store, "f", ["a", "b", "d"])
    assert other.name != first.name and len(list_parts(store, "f")) == 2


def test_readers_deduplicate_by_key_newest_run_wins(store):
    write_part(store, "f", table(["a", "b"]).set_column(2, "x", pa.array([1, 1])),
               run_id="20260101T000000aaaaaa", key=KEY)
    write_part(store, "f", table(["b", "c"]).set_column(2, "x", pa.array([2, 2])),
               run_id="20260102T000000bbbbbb", key=KEY)
    raw = read_parts(store, "f")
    assert raw.num_rows == 4  # what is on disk after a race the lease did not fence
    rows = read_parts(store, "f", key=KEY).sort_by("image_id").to_pylist()
    assert [(r["image_id"], r["x"]) for r in rows] == [("a", 1), ("b", 2), ("c", 2)]
    only = read_parts(store, "f", ["x"], key=KEY)
    assert only.column_names == ["x"] and only.num_rows == 3


def test_parts_are_checked_against_their_schema(store):
    schema = pa.schema([("image_id", pa.string()), ("fingerprint", pa.string()),
                        ("x", pa.int32())])
    info = write_part(store, "f", table(["a"]), run_id="r1", key=KEY, schema=schema)
    assert read_parts(store, "f", parts=[p for p in list_parts(store, "f")
                                         if p.name == info.name]).schema.field("x").type == \
        pa.int32()
    with pytest.raises(SchemaError, match="miss columns"):
        write_part(store, "f", table(["b"]).drop_columns(["x"]), run_id="r1", key=KEY,
                   schema=schema)


def test_sweep_removes_only_temporaries(store, tmp_path):
    put(store, "f", ["a"])
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(b"PAR1 this is not parquet")
    store.publish_file(str(bad), "f", ".tmp-123-part-r3-00000-03-n1.parquet")
    assert sweep(store, "f") == 1
    assert [p.run_id for p in list_parts(store, "f")] == ["r1"]


def test_part_with_wrong_row_count_in_name_is_quarantined_by_a_run(store):
    info = put(store, "f", ["a", "b"])
    store.move(("f", info.name), ("f", info.name.replace("-n2.", "-n9.")))
    assert read_parts(store, "f").num_rows == 0  # read-only: skipped, left in place
    assert len(list_parts(store, "f")) == 1
    assert read_parts(store, "f", quarantine=True).num_rows == 0
    assert list_parts(store, "f") == []


def test_a_transient_read_error_never_quarantines(store, monkeypatch):
    put(store, "f", ["a", "b"])

    def offline(*parts):
        raise ConnectionResetError("Drive went away")

    monkeypatch.setattr(store, "open_input_file", offline)
    with pytest.raises(PartReadError, match="rerun"):
        read_parts(store, "f", quarantine=True)
    monkeypatch.undo()
    assert read_parts(store, "f").num_rows == 2 and not store.exists("quarantine")


def test_done_set_is_keyed_by_fingerprint(store):
    put(store, "f", ["a", "b"], fp="10-1")
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
        put(store, "f", ids[k * 1000:(k + 1) * 1000], run_id="r")
    assert len(done_keys(store, "f")) == 20_000


def test_a_run_quarantines_corrupt_parts_so_their_images_are_redone(store, tmp_path):
    put(store, "f", ["a", "b"])
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(b"not parquet at all")
    store.publish_file(str(bad), "f", "part-r2-0123456789abcdef-n3.parquet")
    assert sorted(done_keys(store, "f", quarantine=True).to_pylist()) == ["a|1-1", "b|1-1"]
    assert [p.run_id for p in list_parts(store, "f")] == ["r1"]
    assert store.exists("quarantine", "f", "part-r2-0123456789abcdef-n3.parquet")


def test_a_superseded_run_cannot_publish(store):
    from exoray.storage.lease import Fence, LeaseLost, take_lease

    take_lease(store, "features", "old")
    fence = Fence(store, "features", "old")
    write_part(store, "f", table(["a"]), run_id="old", key=KEY, before_publish=fence)
    take_lease(store, "features", "new", force=True)  # a rerun after a kill
    with pytest.raises(LeaseLost, match="took over"):
        write_part(store, "f", table(["b"]), run_id="old", key=KEY, before_publish=fence)
    assert read_parts(store, "f")["image_id"].to_pylist() == ["a"]


def test_a_live_run_keeps_its_lease_and_a_dead_one_loses_it(store):
    from exoray.storage.lease import LeaseBusy, LeaseKeeper, live_holder, take_lease

    take_lease(store, "features", "first")
    with pytest.raises(LeaseBusy, match="already running"):
        take_lease(store, "features", "second")  # same host, this process is alive
    with LeaseKeeper(store, "features", "first"):
        assert live_holder(store, "features")["run_id"] == "first"
    assert live_holder(store, "features") is None  # released at the end of the run
    take_lease(store, "features", "second")
    record = json.loads(store.read_bytes("logs/leases", "features.json"))
    record["pid"] = 2 ** 22 + 12345  # no such process: the holder was killed
    store.write_bytes_atomic(json.dumps(record).encode(), "logs/leases", "features.json")
    take_lease(store, "features", "third")
    assert live_holder(store, "features")["run_id"] == "third"
