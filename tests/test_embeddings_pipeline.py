"""Phase III + VII end to end with tiny real models: one row per model, indices, navigation."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pyarrow.compute as pc
import pytest

from exoray.cli.main import main
from exoray.engine.errors_table import read_errors
from exoray.engine.runlog import read_runs
from exoray.engine.status import collect_status
from exoray.explore.explorer import Explorer
from exoray.image.manifest import read_manifest
from exoray.index.embeddings import read_current_embeddings, resolve_embeddings
from exoray.storage import layout
from exoray.storage.parts import read_parts
from exoray.storage.store import Store
from pipelines import embeddings, indices, manifest

MODELS = ["clip:tiny", "dino:tiny"]


@pytest.fixture(scope="module")
def gpu_ray(tmp_path_factory):
    """Ray with one *logical* GPU: the fractional-GPU wiring runs, the models run on CPU."""
    import os

    import ray

    if ray.is_initialized():
        ray.shutdown()
    ray.init(num_cpus=2, num_gpus=1, include_dashboard=False, configure_logging=False,
             log_to_driver=False, _temp_dir=str(tmp_path_factory.mktemp("ray")))
    os.environ.setdefault("EXORAY_MODELS_DIR", str(tmp_path_factory.mktemp("models")))
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def embedded(gpu_ray, synth_set, tmp_path_factory):
    root, truth = synth_set
    base = tmp_path_factory.mktemp("emb")
    manifest.run(base, images=root)
    first = embeddings.run(base, ["clip:tiny"], part_rows=30, batch_size=8, show_progress=False)
    both = embeddings.run(base, MODELS, part_rows=30, batch_size=8, show_progress=False)
    indices.run(base, ["clip", "dino"])
    return base, root, truth, first, both


def good_images(truth):
    return {r for r, t in truth["images"].items() if not t["corrupt"]}


def test_one_row_per_model_and_image(embedded):
    base, _, truth, first, both = embedded
    store = Store(str(base))
    n_good = len(good_images(truth))
    assert first.processed == n_good
    assert both.todo == n_good  # clip was done: the second run only needed dino
    for model in ("clip", "dino"):
        parts = read_parts(store, resolve_embeddings(store, model).folder)
        ids = parts["image_id"].to_pylist()
        assert len(ids) == len(set(ids)) == n_good, model
        ids, vectors, info = read_current_embeddings(store, model)
        assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=2e-3)
        assert parts["vector"].type.value_type == "halffloat"
        assert parts["weights_hash"][0].as_py() and info["model_id"].startswith("tiny:")
    errors = read_errors(store, "embed")
    corrupt = {r for r, t in truth["images"].items() if t["corrupt"]}
    assert set(errors["relpath"].to_pylist()) == corrupt


def test_rerun_embeds_nothing(embedded):
    base, *_ = embedded
    again = embeddings.run(base, MODELS, part_rows=30, batch_size=8, show_progress=False)
    assert again.todo == 0
    runs = read_runs(Store(str(base)))
    assert "tiny:clip" in runs["model_id"].to_pylist()[-1]


def test_search_returns_the_query_image_first(embedded):
    base, root, truth, *_ = embedded
    store = Store(str(base))
    rel = {r["relpath"]: r["image_id"] for r in read_manifest(store).to_pylist()}
    dup_members = {r for r, t in truth["images"].items()
                   if t.get("near_dup_group") is not None or t.get("exact_dup_of")}
    dup_members |= {t["exact_dup_of"] for t in truth["images"].values() if t.get("exact_dup_of")}
    target = sorted(good_images(truth) - dup_members)[3]
    for model in ("clip", "dino"):
        ex = Explorer(base, model)
        ids, vectors, _ = read_current_embeddings(store, model)
        own = vectors[ids.index(rel[target])]
        assert ex.search(vector=own, k=5)[0]["image_id"] == rel[target]
        hits = ex.search(image=str(root / target), k=5)
        assert hits[0]["image_id"] == rel[target] and hits[0]["relpath"] == target
        by_id = ex.search(image_id=rel[target], k=5)
        assert len(by_id) == 5 and rel[target] not in [h["image_id"] for h in by_id]


def test_text_search_clip_only(embedded):
    base, *_ = embedded
    hits = Explorer(base, "clip").search("a dog on a beach", k=7)
    assert len(hits) == 7 and hits[0]["score"] >= hits[-1]["score"]
    with pytest.raises(ValueError, match="text"):
        Explorer(base, "dino").search("a dog", k=3)


def test_cluster_and_sample(embedded):
    base, *_ = embedded
    ex = Explorer(base, "dino")
    clusters = ex.cluster(5, seed=1)
    n = len(read_current_embeddings(Store(str(base)), "dino")[0])
    assert sum(c["size"] for c in clusters) == n and len(clusters) == 5
    assert Store(str(base)).exists(layout.CLUSTERS, "dino-k5.parquet")
    a = ex.sample(10, seed=3)
    assert a == ex.sample(10, seed=3) and len(set(a)) == 10
    assert ex.sample(10, method="random", seed=1) != ex.sample(10, method="random", seed=2)
    with pytest.raises(ValueError, match="subset"):
        ex.sample(5, subset="high_quality")


def test_index_extends_with_new_images_and_status_shows_coverage(embedded, tmp_path):
    base, root, truth, *_ = embedded
    work, images = tmp_path / "base", tmp_path / "images"
    shutil.copytree(base, work)
    shutil.copytree(root, images)
    manifest.run(work, images=images)
    src = next(r for r in sorted(good_images(truth)) if r.endswith(".jpg"))
    shutil.copyfile(images / src, images / "brand_new.jpg")
    manifest.run(work)
    embeddings.run(work, MODELS, part_rows=30, batch_size=8, show_progress=False)
    st = {p.phase: p for p in collect_status(str(work)).phases}
    assert st["embed:clip"].extra["index"]["not_indexed"] == 1
    (summary,) = indices.run(work, ["clip"])
    assert summary["mode"] == "extend" and summary["added"] == 1
    st = {p.phase: p for p in collect_status(str(work)).phases}
    assert st["embed:clip"].extra["index"]["not_indexed"] == 0


def test_cli_search_json_and_errors(embedded, capsys):
    base, *_ = embedded
    ids = read_current_embeddings(Store(str(base)), "clip")[0]
    assert main(["search", str(base), "--model", "clip", "--id", ids[0], "-k", "3", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["rank"] for r in rows] == [1, 2, 3] and all(r["relpath"] for r in rows)
    assert main(["search", str(base), "--model", "dino", "--text", "cat"]) == 2
    assert "text" in capsys.readouterr().err
    assert main(["embed", str(base), "--model", "nosuch"]) == 2
    assert "valid backends" in capsys.readouterr().err
    assert main(["sample", str(base), "--n", "0"]) == 2
    assert "positive integer" in capsys.readouterr().err
    assert main(["search", str(base), "--id", "nosuchid"]) == 2
    assert capsys.readouterr().err.startswith("exoray search: error: image_id 'nosuchid'")


def test_embedding_dupes_join_hash_dupes(embedded):
    from pipelines import dupes, features

    base, _, truth, *_ = embedded
    features.run(base, part_rows=60, show_progress=False)
    summary = dupes.run(base, model="dino", threshold=0.999)
    table = dupes.read_dupes(str(base))
    exact = {r for r, t in truth["images"].items() if t.get("exact_dup_of")}
    in_groups = set(table["relpath"].to_pylist())
    assert exact <= in_groups
    assert summary["groups"] >= 1
    assert pc.count_distinct(table["image_id"]).as_py() == table.num_rows


def _tiny_clip_checkpoint(out, embed_dim: int) -> str:
    """A tiny open_clip checkpoint with another embedding size, in open_clip's local-dir format."""
    import open_clip
    import torch
    from safetensors.torch import save_file

    from exoray.models.tiny import tiny_config

    config = tiny_config("clip")
    config["model_cfg"]["embed_dim"] = embed_dim
    out.mkdir(parents=True)
    (out / "open_clip_config.json").write_text(json.dumps(config))
    torch.manual_seed(1)
    model = open_clip.create_model(f"local-dir:{out}", load_weights=False, pretrained_text=False)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()},
              str(out / "open_clip_model.safetensors"))
    return str(out)


def test_a_second_model_id_never_breaks_the_first(embedded, tmp_path):
    """clip:tiny (32-d) then a 48-d clip checkpoint: both read, index and search."""
    base, *_ = embedded
    work = tmp_path / "base"
    shutil.copytree(base, work)
    ckpt = _tiny_clip_checkpoint(tmp_path / "clip48", 48)
    result = embeddings.run(work, ["clip"], checkpoints={"clip": ckpt}, part_rows=30,
                            batch_size=8, show_progress=False)
    store = Store(str(work))
    assert result.processed == len(read_current_embeddings(store, "clip:tiny")[0])
    new = resolve_embeddings(store, "clip")
    old = resolve_embeddings(store, "clip:tiny")
    assert new.model_id.startswith("local:") and new.folder != old.folder
    assert read_current_embeddings(store, "clip")[1].shape[1] == 48
    assert read_current_embeddings(store, "clip:tiny")[1].shape[1] == 32
    (summary,) = indices.run(work, ["clip"])
    assert summary["model_id"] == new.model_id and summary["mode"].startswith("rebuild")
    assert len(Explorer(work, "clip").search("a red square", k=3)) == 3
    (summary,) = indices.run(work, ["clip:tiny"])
    assert summary["model_id"] == old.model_id
    assert len(Explorer(work, "clip:tiny").search("a red square", k=3)) == 3
    labels = {p.phase for p in collect_status(str(work)).phases}
    assert {"embed:clip", "embed:clip:tiny", "embed:dino"} <= labels


def test_search_never_returns_a_deleted_image(embedded, tmp_path):
    base, root, truth, *_ = embedded
    work, images = tmp_path / "base", tmp_path / "images"
    shutil.copytree(base, work)
    shutil.copytree(root, images)
    manifest.run(work, images=images)
    ids = read_current_embeddings(Store(str(work)), "clip")[0]
    rel = {r["image_id"]: r["relpath"] for r in read_manifest(Store(str(work))).to_pylist()}
    gone = ids[0]
    (images / rel[gone]).unlink()
    manifest.run(work)  # marks it deleted; the index still holds it
    hits = Explorer(work, "dino").search(image_id=ids[1], k=len(ids))
    assert gone not in [h["image_id"] for h in hits]
    assert len(hits) == len(ids) - 2  # all but the query and the deleted image


def test_a_changed_image_is_searched_by_its_new_vector(embedded, tmp_path):
    base, root, truth, *_ = embedded
    work, images = tmp_path / "base", tmp_path / "images"
    shutil.copytree(base, work)
    shutil.copytree(root, images)
    manifest.run(work, images=images)
    indices.run(work, ["dino"])
    store = Store(str(work))
    rel = {r["relpath"]: r["image_id"] for r in read_manifest(store).to_pylist()}
    jpgs = sorted(r for r in good_images(truth) if r.endswith(".jpg"))
    changed, source = jpgs[0], jpgs[-1]
    shutil.copyfile(images / source, images / changed)  # same name, new content
    manifest.run(work)
    embeddings.run(work, ["dino:tiny"], part_rows=30, batch_size=8, show_progress=False)
    (summary,) = indices.run(work, ["dino"])
    assert summary["mode"].startswith("rebuild") and "changed" in summary["mode"]
    ids, vectors, _ = read_current_embeddings(store, "dino")
    new = vectors[ids.index(rel[changed])]
    hit = Explorer(work, "dino").search(vector=new, k=1)[0]
    assert hit["image_id"] in (rel[changed], rel[source]) and hit["score"] > 0.99
