"""BASE and the image root on an S3-compatible server (moto on loopback): the same Store, the same
guarantees — one atomic put per part (no rename), content names, read-side deduplication, the
lease across hosts, and a manifest of images that live on S3."""

from __future__ import annotations

import json
import time

import pyarrow as pa
import pyarrow.fs as pafs
import pytest

from exoray.engine.done import done_keys
from exoray.engine.stages.reading import read_image_bytes
from exoray.image.manifest import manifest_root, read_manifest
from exoray.storage import layout
from exoray.storage.lease import STALE_AFTER, Fence, LeaseBusy, LeaseLost, live_holder, take_lease
from exoray.storage.parts import list_parts, read_parts, sweep, write_part
from exoray.storage.store import Store
from tests.s3_server import s3_server

KEY = ("image_id", "fingerprint")


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    with s3_server(str(tmp_path_factory.mktemp("moto") / "moto.log")) as server:
        server.make_bucket("exoray")
        yield server


@pytest.fixture
def store(s3, request):
    return Store(s3.location("exoray", f"bases/{request.node.name}"))


def rows(ids, x=0):
    return pa.table({"image_id": ids, "fingerprint": ["1-1"] * len(ids), "x": [x] * len(ids)})


def test_a_part_is_one_put_and_a_retry_republishes_the_same_name(store):
    assert store.atomic_put and store.local_path("f") is None
    counted = Store("latency+" + store.location)  # the same bucket, every request counted
    first = write_part(counted, "f", rows(["a", "b", "c"]), run_id="r1", key=KEY)
    assert counted.counter.snapshot().get("rename", 0) == 0  # a put, never copy + rename
    again = write_part(store, "f", rows(["c", "b", "a"]), run_id="r1", key=KEY)  # Ray's retry
    assert again.name == first.name and [p.name for p in list_parts(store, "f")] == [first.name]
    assert sweep(store, "f") == 0  # no temporary ever existed
    assert read_parts(store, "f")["image_id"].to_pylist() == ["a", "b", "c"]


def test_readers_deduplicate_a_late_writer_and_done_counts_each_image_once(store):
    write_part(store, "f", rows(["a", "b"], 1), run_id="20260101T000000aaaaaa", key=KEY)
    write_part(store, "f", rows(["b", "c"], 2), run_id="20260102T000000bbbbbb", key=KEY)
    assert read_parts(store, "f").num_rows == 4  # both parts are on S3
    got = read_parts(store, "f", key=KEY).sort_by("image_id").to_pylist()
    assert [(r["image_id"], r["x"]) for r in got] == [("a", 1), ("b", 2), ("c", 2)]
    assert sorted(done_keys(store, "f").to_pylist()) == ["a|1-1", "b|1-1", "c|1-1"]


def test_sub_locations_keep_the_endpoint(store):
    write_part(store, "features/global", rows(["a"]), run_id="r1", key=KEY)
    sub = Store(store.uri("features"))
    assert "endpoint_override=" in sub.location
    assert [p.rows for p in list_parts(sub, "global")] == [1]


def _age_lease(store: Store, phase: str, *, seconds: float, host: str) -> None:
    record = json.loads(store.read_bytes(layout.LEASES, f"{phase}.json"))
    record.update(time=time.time() - seconds, host=host)
    store.write_bytes_atomic(json.dumps(record).encode(), layout.LEASES, f"{phase}.json")


def test_a_driver_on_another_node_is_fenced_by_its_heartbeat(store):
    """No pid check across hosts: a live holder elsewhere blocks, a silent one is taken over,
    and the stale run's writers (a raylet that outlived it) can no longer publish."""
    take_lease(store, "features", "old")
    _age_lease(store, "features", seconds=5, host="node-a")
    with pytest.raises(LeaseBusy, match="run old on node-a"):
        take_lease(store, "features", "new")
    _age_lease(store, "features", seconds=STALE_AFTER + 5, host="node-a")
    assert live_holder(store, "features") is None
    take_lease(store, "features", "new")
    stale_writer = Fence(store, "features", "old", check_orphan=False)
    with pytest.raises(LeaseLost, match="took over from run old"):
        write_part(store, "f", rows(["a"]), run_id="old", key=KEY, before_publish=stale_writer)
    assert list_parts(store, "f") == []


def test_manifest_of_images_on_s3(s3, tmp_path, synth_set):
    from pipelines import manifest

    root, truth = synth_set
    fs = s3.make_bucket("photos")
    pafs.copy_files(str(root), s3.key("photos", "set1"), destination_filesystem=fs)
    images = s3.location("photos", "set1")
    base = s3.location("exoray", "bases/manifest")
    summary = manifest.run(base, images=images)
    table = read_manifest(Store(base))
    assert table.num_rows == len(truth["images"]) and summary is not None
    assert set(table["relpath"].to_pylist()) == set(truth["images"])
    assert manifest_root(Store(base)) == images  # later phases read the images from S3 too
    assert read_image_bytes(Store(images), table["relpath"][0].as_py()) == \
        (root / table["relpath"][0].as_py()).read_bytes()


def test_weights_cache_on_s3_is_fetched_once_per_node(s3, tmp_path, monkeypatch):
    """BASE/models on S3 is used, not bypassed: the driver's build goes up once, every other
    node copies it down once to local disk and loads it without building or downloading."""
    from exoray.models import tiny
    from exoray.models.weights import (
        COMPLETE_MARKER,
        node_cache_dir,
        push_models,
        weight_files,
        weights_hash,
    )

    uri = s3.location("exoray", "bases/weights/models")
    monkeypatch.setenv("EXORAY_LOCAL_MODELS_DIR", str(tmp_path / "driver-node"))
    driver_dir = node_cache_dir(uri)
    built = tiny.ensure_tiny("clip", driver_dir)
    pushed = push_models(driver_dir, uri)
    assert "tiny-clip/open_clip_model.safetensors" in pushed
    assert pushed[-1] == f"tiny-clip/{COMPLETE_MARKER}"  # the marker goes up last
    assert push_models(driver_dir, uri) == []

    monkeypatch.setenv("EXORAY_LOCAL_MODELS_DIR", str(tmp_path / "worker-node"))
    counted = "latency+" + uri + "&open_ms=1"  # the same bucket, through the latency store
    worker_dir = node_cache_dir(counted)
    assert str(worker_dir).startswith(str(tmp_path / "worker-node"))
    monkeypatch.setitem(tiny.BUILDERS, "clip", lambda out: pytest.fail("rebuilt on the worker"))
    loaded = tiny.ensure_tiny("clip", worker_dir)
    files = ["open_clip_model.safetensors"]
    assert weights_hash(weight_files(loaded, files)) == weights_hash(weight_files(built, files))
    weights = loaded / "open_clip_model.safetensors"
    before = weights.stat()
    assert node_cache_dir(counted) == worker_dir
    after = weights.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns), \
        "a node that has the weights fetches nothing again"
