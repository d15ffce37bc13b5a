"""exoray index/search/cluster/sample: the query cache, JSON types, output paths, size limits,
hints that name the next command, and deleted/changed images left out everywhere.

No Ray: the BASE is a real manifest of small PNGs plus synthetic clip:tiny embeddings written
as a Phase III part, so text and image queries run the real tiny CLIP.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from exoray.cli.main import main
from exoray.engine.runlog import new_run_id
from exoray.engine.schemas import EMBEDDINGS_KEY, EMBEDDINGS_SCHEMA
from exoray.explore.explorer import Explorer
from exoray.explore.query_cache import QueryCache, query_cache_path
from exoray.image.manifest import read_manifest
from exoray.index import clustered_vectors
from exoray.index.embeddings import read_current_embeddings, remember_model
from exoray.models import describe_backend
from exoray.storage.parts import write_part
from exoray.storage.store import Store
from pipelines import indices, manifest

pytestmark = pytest.mark.usefixtures("one_faiss_thread")

N = 24
SPEC = "clip:tiny"
QUERY = "a red square"


def _write_images(folder) -> None:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(N):
        pixels = rng.integers(0, 256, size=(20 + i, 24, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"img{i:02d}.png")


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """(BASE, image root, model id): manifest, clip:tiny embeddings and their index."""
    root = tmp_path_factory.mktemp("explore")
    images, base = root / "images", root / "base"
    _write_images(images)
    manifest.run(base, images=images)
    store = Store(str(base))
    desc = describe_backend(SPEC)
    model_id, dim = desc["model_id"], desc["dim"]
    folder = remember_model(store, "clip", model_id, {"variant": "tiny"}, dim)
    rows = read_manifest(store).sort_by("image_id")
    vectors, _ = clustered_vectors(N, dim, 3, seed=0)
    run_id = new_run_id()
    flat = pa.array(vectors.astype(np.float16).reshape(-1), pa.float16())
    table = pa.table({
        "image_id": rows["image_id"], "fingerprint": rows["fingerprint"],
        "model_id": [model_id] * N, "weights_hash": ["synthetic"] * N, "dim": [dim] * N,
        "vector": pa.FixedSizeListArray.from_arrays(flat, dim), "run_id": [run_id] * N})
    write_part(store, folder, table, run_id=run_id, key=EMBEDDINGS_KEY, schema=EMBEDDINGS_SCHEMA)
    indices.run(base, [SPEC])
    Explorer(base, SPEC).backend  # noqa: B018 -- build the tiny model once, before any copy
    return base, images, model_id


@pytest.fixture
def work(built, tmp_path):
    """A private copy of the BASE and its images (tests that write or delete)."""
    base, images, model_id = built
    copy, copy_images = tmp_path / "base", tmp_path / "images"
    shutil.copytree(base, copy)
    shutil.copytree(images, copy_images)
    manifest.run(copy, images=copy_images)  # same ids and fingerprints, new root
    assert len(read_current_embeddings(Store(str(copy)), SPEC)[0]) == N
    return copy, copy_images, model_id


def _no_backend(monkeypatch) -> None:
    """From now on, loading the model fails the test."""
    def fail(self):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(Explorer, "backend", property(fail))


# ----------------------------------------------------------------------------- query cache


def test_repeated_text_query_loads_no_model(work, monkeypatch, capsys):
    base, _, model_id = work
    first = Explorer(base, SPEC)
    hits = first.search(QUERY, k=5)
    assert "backend" in first.__dict__
    assert first.last_query_saved == query_cache_path(model_id)
    saved = pq.read_table(Store(str(base)).path(query_cache_path(model_id)))
    assert saved["model_id"].to_pylist() == [model_id] and saved["query"].to_pylist() == [QUERY]

    again = Explorer(base, SPEC)
    assert again.search(QUERY, k=5) == hits
    assert "backend" not in again.__dict__ and again.last_query_saved is None
    fresh = first.backend.encode_text([QUERY])[0]
    assert np.array_equal(again.query_vector(text=QUERY), fresh.astype(np.float32))

    _no_backend(monkeypatch)
    assert main(["search", str(base), "--model", SPEC, "--text", QUERY, "-k", "5", "--json"]) == 0
    assert [r["image_id"] for r in json.loads(capsys.readouterr().out)] == [
        h["image_id"] for h in hits]
    assert main(["search", str(base), "--model", SPEC, "--text", "another query"]) != 0
    assert "the model was loaded" in capsys.readouterr().err  # a new query does need it


def test_cli_says_where_a_new_query_vector_went(work, capsys):
    base, _, model_id = work
    assert main(["search", str(base), "--model", SPEC, "--text", QUERY, "-k", "2"]) == 0
    path = Store(str(base)).uri(query_cache_path(model_id))
    assert f"saved the query vector to {path}" in capsys.readouterr().err
    assert main(["search", str(base), "--model", SPEC, "--text", QUERY, "-k", "2"]) == 0
    assert "saved" not in capsys.readouterr().err


def test_repeated_image_query_is_cached_by_content(work, monkeypatch):
    base, images, _ = work
    hits = Explorer(base, SPEC).search(image=str(images / "img03.png"), k=4)
    shutil.copyfile(images / "img03.png", images.parent / "elsewhere.png")
    _no_backend(monkeypatch)
    again = Explorer(base, SPEC)
    assert again.search(image=str(images.parent / "elsewhere.png"), k=4) == hits


def test_query_cache_is_per_model_bounded_and_survives_a_bad_file(tmp_path):
    store = Store(str(tmp_path))
    cache = QueryCache(store, "m:a", 4, max_queries=3)
    for i in range(5):
        assert cache.put("text", f"q{i}", np.full(4, i + 1.0, np.float32))
    table = pq.read_table(store.path(cache.path))
    assert sorted(table["query"].to_pylist()) == ["q2", "q3", "q4"]  # the newest 3
    reread = QueryCache(store, "m:a", 4)
    assert reread.get("text", "q0") is None
    assert np.array_equal(reread.get("text", "q4"), np.full(4, 5.0, np.float32))
    assert reread.get("image", "q4") is None
    assert QueryCache(store, "m:b", 4).get("text", "q4") is None  # another model id: its own
    assert QueryCache(store, "m:a", 8).get("text", "q4") is None  # a vector of another size
    with open(store.path(cache.path), "wb") as f:
        f.write(b"not parquet")
    broken = QueryCache(store, "m:a", 4)
    assert broken.get("text", "q4") is None
    assert broken.put("text", "q5", np.ones(4, np.float32))
    assert pq.read_table(store.path(cache.path))["query"].to_pylist() == ["q5"]


def test_text_search_without_a_text_encoder_loads_nothing(work, capsys):
    base, *_ = work
    ex = Explorer(base, "dino")
    with pytest.raises(ValueError, match="text encoder"):
        ex.query_vector(text="a dog")
    assert "backend" not in ex.__dict__


# ----------------------------------------------------------------------------- CLI output


def test_cluster_json_has_json_types_and_says_where_it_wrote(built, capsys):
    base, *_ = built
    assert main(["cluster", str(base), "--model", SPEC, "-k", "3", "--json"]) == 0
    captured = capsys.readouterr()
    clusters = json.loads(captured.out)
    assert len(clusters) == 3 and sum(c["size"] for c in clusters) == N
    for c in clusters:
        assert type(c["cluster"]) is int and type(c["size"]) is int
        assert isinstance(c["medoid"], str) and isinstance(c["members"], list)
    path = Store(str(base)).uri("indices/clusters/clip-k3.parquet")
    assert captured.err.strip() == f"wrote {path} ({N} images in 3 clusters)"
    assert pq.read_table(path).num_rows == N
    assert main(["cluster", str(base), "--model", SPEC, "-k", "2"]) == 0
    assert f"wrote {Store(str(base)).uri('indices/clusters/clip-k2.parquet')}" in (
        capsys.readouterr().out)


def test_index_says_where_it_wrote(work, capsys):
    base, *_ = work
    assert main(["index", str(base), "--model", SPEC]) == 0
    out = capsys.readouterr().out
    assert f"wrote {Store(str(base)).uri('indices/clip.json')}" in out
    assert main(["index", str(base), "--model", SPEC, "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["pointer"].endswith("indices/clip.json")
    assert summary["files"].endswith(f"indices/clip/{summary['build']}")


def test_sizes_beyond_the_collection(built, capsys):
    base, *_ = built
    assert main(["cluster", str(base), "--model", SPEC, "-k", "1000"]) == 2
    err = capsys.readouterr().err
    assert err == (f"exoray cluster: error: k=1000 clusters is more than the {N} images with "
                   f"current {SPEC} embeddings; choose k <= {N}\n")
    assert main(["sample", str(base), "--model", SPEC, "--n", "1000"]) == 0
    captured = capsys.readouterr()
    assert len(captured.out.splitlines()) == N
    assert captured.err == (f"--n 1000 is more than the {N} images with current {SPEC} "
                            f"embeddings: printed all {N}\n")
    ids = read_current_embeddings(Store(str(base)), SPEC)[0]
    assert main(["search", str(base), "--model", SPEC, "--id", ids[0], "-k", "1000",
                 "--json"]) == 0
    captured = capsys.readouterr()
    assert len(json.loads(captured.out)) == N - 1
    assert f"{N - 1} results for -k 1000" in captured.err


def test_hints_name_the_command_that_fixes_it(work, capsys):
    base, *_ = work
    where = Store(str(base)).location
    Store(str(base)).delete("indices/clip.json")  # embeddings, but no index
    assert main(["search", str(base), "--model", SPEC, "--text", QUERY]) == 2
    err = capsys.readouterr().err
    assert f"run `exoray index {where} --model {SPEC}` first" in err
    assert len(err.splitlines()) == 1
    # cluster and sample read the embeddings themselves: no index needed
    assert main(["sample", str(base), "--model", SPEC, "--n", "3"]) == 0
    capsys.readouterr()
    assert main(["search", str(base), "--model", "dino", "--id", "x"]) == 2
    assert (f"run `exoray embed {where} --model dino`, then `exoray index {where} --model dino`"
            in capsys.readouterr().err)
    assert main(["index", str(base), "--model", SPEC]) == 0
    capsys.readouterr()
    assert main(["search", str(base), "--model", SPEC, "--id", "nosuchid"]) == 2
    assert capsys.readouterr().err.startswith(
        "exoray search: error: image_id 'nosuchid' is not an image of")
    assert main(["sample", str(base / "typo"), "--model", SPEC]) == 2
    assert "does not exist; check the path" in capsys.readouterr().err
    assert main(["cluster", str(base), "--model", "dino"]) == 2
    assert f"run `exoray embed {where} --model dino` first" in capsys.readouterr().err


# ----------------------------------------------------------------------------- current images


def test_deleted_and_changed_images_leave_search_cluster_and_sample(work, capsys):
    base, images, _ = work
    store = Store(str(base))
    rel = {r["image_id"]: r["relpath"] for r in read_manifest(store).to_pylist()}
    ids = read_current_embeddings(store, SPEC)[0]
    deleted, changed = ids[0], ids[1]
    (images / rel[deleted]).unlink()
    Image.new("RGB", (50, 50), (255, 0, 0)).save(images / rel[changed])
    manifest.run(base)
    gone, left = {deleted, changed}, N - 2

    ex = Explorer(base, SPEC)
    hits = ex.search(image_id=ids[2], k=N)
    assert len(hits) == left - 1 and not gone & {h["image_id"] for h in hits}
    assert not gone & {h["image_id"] for h in ex.search(QUERY, k=N)}
    clusters = ex.cluster(3)
    assert sum(c["size"] for c in clusters) == left
    assert not gone & set(pq.read_table(store.path(ex.cluster_path(3)))["image_id"].to_pylist())
    for method in ("diverse", "random", "stratified"):
        picked = ex.sample(left - 1, method=method, seed=1)
        assert len(set(picked)) == left - 1 and not gone & set(picked), method
    assert sorted(ex.sample(N)) == sorted(set(ids) - gone)
    assert main(["sample", str(base), "--model", SPEC, "--n", str(N), "--json"]) == 0
    captured = capsys.readouterr()
    assert not gone & {r["image_id"] for r in json.loads(captured.out)}
    assert f"more than the {left} images" in captured.err
