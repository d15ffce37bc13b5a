"""The Drive/S3-like latency store: what the commit protocol costs in requests on slow storage."""

from __future__ import annotations

import pickle
import time

import pyarrow as pa
import pyarrow.fs as pafs
import pytest

from exoray.engine.done import done_keys
from exoray.storage.latency import PROFILES, split_location
from exoray.storage.listing import list_tree
from exoray.storage.parts import list_parts, read_parts, write_part
from exoray.storage.store import Store

KEY = ("image_id", "fingerprint")


def rows(ids):
    return pa.table({"image_id": ids, "fingerprint": ["1-1"] * len(ids)})


def slow(base, query="profile=none"):
    return Store(f"latency+file://{base}?{query}")


def test_location_settings_and_bad_ones():
    inner, profile = split_location("latency+s3://b/x?profile=s3&open_ms=7&endpoint_override=h")
    assert inner == "s3://b/x?endpoint_override=h"  # the inner store keeps its own settings
    assert profile.open_ms == 7 and profile.list_ms == PROFILES["s3"].list_ms
    with pytest.raises(ValueError, match="unknown profile 'gdrive'.*valid: none, drive, s3"):
        split_location("latency+file:///x?profile=gdrive")
    with pytest.raises(ValueError, match="unknown setting 'open'"):
        split_location("latency+file:///x?open=3")
    with pytest.raises(ValueError, match="open_ms='slow' is not a number"):
        split_location("latency+file:///x?open_ms=slow")


def test_drive_publishes_by_rename_and_s3_by_one_put(tmp_path):
    """Drive has no atomic put: a part goes to a temporary name and is renamed; S3 puts once."""
    drive = slow(tmp_path / "drive", "profile=drive&mb_s=0")
    write_part(drive, "f", rows(["a", "b"]), run_id="r", key=KEY)
    assert drive.counter.snapshot()["rename"] == 1 and not drive.atomic_put
    assert [p.rows for p in list_parts(Store(str(tmp_path / "drive")), "f")] == [2]


def test_done_set_costs_one_listing_and_one_open_per_part(tmp_path):
    store = slow(tmp_path / "b", "list_ms=1&open_ms=1")
    for k in range(12):
        write_part(store, "f", rows([f"{k}-{i}" for i in range(5)]), run_id="r", key=KEY)
    store.counter.reset()
    assert len(done_keys(store, "f")) == 60
    calls = store.counter.snapshot()
    assert calls["list"] == 1 and calls["open"] == 12, calls
    assert calls.get("stat", 0) == 0, "no per-part lookups: the name carries the row count"


def test_latency_and_bandwidth_are_really_paid(tmp_path):
    """The wrapper sleeps per call and per byte (a lower bound: a busy machine only adds)."""
    store = slow(tmp_path / "b", "open_ms=40&mb_s=1")
    src = tmp_path / "blob.bin"
    src.write_bytes(b"x" * 100_000)  # 0.1 s at 1 MB/s
    Store(str(tmp_path / "b")).publish_file(str(src), "blob.bin")
    started = time.perf_counter()
    assert store.read_bytes("blob.bin") == src.read_bytes()
    assert time.perf_counter() - started >= 0.04 + 0.1
    assert store.counter.bytes_read == 100_000


def test_a_worker_rebuilt_from_the_location_is_slow_too(tmp_path):
    store = slow(tmp_path / "b", "profile=s3")
    again = pickle.loads(pickle.dumps(store))  # what a Ray worker gets
    assert again.counter is not None and again.fs.type_name == store.fs.type_name
    assert again.uri("x") == f"latency+file://{tmp_path}/b/x?profile=s3"


def make_tree(root, folders=5, sub=3, files=4):
    for a in range(folders):
        for b in range(sub):
            d = root / f"d{a}" / f"s{b}"
            d.mkdir(parents=True)
            for c in range(files):
                (d / f"img{c}.jpg").write_bytes(b"j")
    (root / "top.jpg").write_bytes(b"j")


def test_parallel_listing_by_prefix_finds_the_same_entries(tmp_path):
    make_tree(tmp_path / "tree")
    store = slow(tmp_path / "tree", "list_ms=1")
    fs, base = store.fs, store.root
    whole = {(i.path, i.type) for i in fs.get_file_info(pafs.FileSelector(base, recursive=True))}
    store.counter.reset()
    split = list_tree(fs, base, threads=4)
    assert {(i.path, i.type) for i in split} == whole and len(split) == len(whole)
    assert store.counter.snapshot()["list"] == 1 + 5  # the root, then one per top folder
    files = store.list_files("", recursive=True)
    assert len(files) == 5 * 3 * 4 + 1 and files[0].relpath == "d0/s0/img0.jpg"


def test_a_flat_folder_is_one_listing(tmp_path):
    store = slow(tmp_path / "b", "list_ms=1")
    for k in range(3):
        write_part(store, "f", rows([str(k)]), run_id="r", key=KEY)
    store.counter.reset()
    assert len(list_tree(store.fs, store.path("f"))) == 3
    assert store.counter.snapshot()["list"] == 1
    assert read_parts(store, "nothing").num_rows == 0  # a missing folder is empty, not an error
