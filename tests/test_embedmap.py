"""exoray map: clusters stay apart in 2-D, placed points land by their neighbours, the same seed
gives the same map, reruns are no-ops until the embeddings change, a SIGKILL before the pointer
is published leaves the old map, and bad input gets a one-line error.

No Ray: the BASE is a real manifest of small PNGs plus planted-cluster vectors written as a
Phase III part (the map's input), so every test runs the real PaCMAP fit and the real storage.
"""

from __future__ import annotations

import json
import shutil
import signal
import sys
from pathlib import Path

import faiss
import numpy as np
import pyarrow as pa
import pytest
from PIL import Image

from exoray.cli.main import main
from exoray.embedmap import MIN_FIT_POINTS, build_map, layout_2d, map_info, read_map
from exoray.engine.runlog import new_run_id
from exoray.engine.schemas import EMBEDDINGS_KEY, EMBEDDINGS_SCHEMA
from exoray.image.manifest import read_manifest
from exoray.index import clustered_vectors
from exoray.index.embeddings import remember_model
from exoray.storage.parts import write_part
from exoray.storage.store import Store
from pipelines import manifest
from tests import procs

pytestmark = pytest.mark.usefixtures("one_faiss_thread")

N, DIM, CLUSTERS, SAMPLE = 240, 96, 6, 150
MODEL_ID = "synthetic:planted-clusters"


def make_base(root, n: int = N, seed: int = 0) -> tuple[str, dict[str, int]]:
    """(BASE, image_id -> planted cluster): n images with clip embeddings from planted clusters."""
    images, base = root / "images", root / "base"
    images.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (8, 8 + i % 5, 3), dtype=np.uint8)).save(
            images / f"img{i:04d}.png")
    manifest.run(base, images=images)
    store = Store(str(base))
    folder = remember_model(store, "clip", MODEL_ID, {"variant": "planted"}, DIM)
    rows = read_manifest(store).sort_by("image_id")
    vectors, labels = clustered_vectors(n, DIM, min(CLUSTERS, n), seed=seed, spread=0.5)
    run_id = new_run_id()
    flat = pa.array(vectors.astype(np.float16).reshape(-1), pa.float16())
    write_part(store, folder, pa.table({
        "image_id": rows["image_id"], "fingerprint": rows["fingerprint"],
        "model_id": [MODEL_ID] * n, "weights_hash": ["synthetic"] * n, "dim": [DIM] * n,
        "vector": pa.FixedSizeListArray.from_arrays(flat, DIM), "run_id": [run_id] * n}),
        run_id=run_id, key=EMBEDDINGS_KEY, schema=EMBEDDINGS_SCHEMA)
    return str(base), dict(zip(rows["image_id"].to_pylist(), labels.tolist(), strict=True))


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """(BASE, labels, summary) with a map fitted on SAMPLE of N points."""
    base, labels = make_base(tmp_path_factory.mktemp("map"))
    summary = build_map(base, "clip", sample=SAMPLE, seed=0)
    return base, labels, summary


@pytest.fixture
def work(built, tmp_path):
    """A private copy of the built BASE and its images (tests that rebuild, delete or kill)."""
    base, labels, _ = built
    copy, images = tmp_path / "base", tmp_path / "images"
    shutil.copytree(base, copy)
    shutil.copytree(Path(base).parent / "images", images)
    manifest.run(copy, images=images)  # same ids and fingerprints, the copy's image root
    return str(copy), labels


def map_arrays(table: pa.Table) -> tuple[list[str], np.ndarray, np.ndarray]:
    xy = np.column_stack([table["x"].to_numpy(), table["y"].to_numpy()]).astype(np.float32)
    return table["image_id"].to_pylist(), xy, table["fitted"].to_numpy(zero_copy_only=False)


def nearest(reference: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    index = faiss.IndexFlatL2(reference.shape[1])
    index.add(np.ascontiguousarray(reference, dtype=np.float32))
    return index.search(np.ascontiguousarray(queries, dtype=np.float32), k)[1]


def builds(base: str) -> list[str]:
    return sorted({e.relpath.split("/", 1)[0] for e in Store(base).list_files("maps/clip",
                                                                              recursive=True)})


# ----------------------------------------------------------------------------- what the map shows


def test_clusters_stay_apart_and_placed_points_join_their_neighbours(built):
    base, labels, summary = built
    table = read_map(base, "clip")
    assert table.schema.names == ["image_id", "x", "y", "fitted"]
    assert [str(t) for t in table.schema.types] == ["string", "float", "float", "bool"]
    ids, xy, fitted = map_arrays(table)
    assert ids == sorted(labels) and np.isfinite(xy).all()
    assert fitted.sum() == SAMPLE and summary["placed"] == N - SAMPLE
    truth = np.array([labels[i] for i in ids])
    # Every point's 8 nearest map neighbours come from its own planted cluster.
    same = truth[nearest(xy, xy, 9)[:, 1:]] == truth[:, None]
    assert same.mean() >= 0.95
    # A placed point sits among the fitted points of its cluster ...
    placed, fit_rows = np.flatnonzero(~fitted), np.flatnonzero(fitted)
    near_fitted = fit_rows[nearest(xy[fit_rows], xy[placed], 5)]
    assert (truth[near_fitted] == truth[placed][:, None]).mean() >= 0.95
    # ... close to the fitted point nearest to it in embedding space (well inside the map).
    emb = embeddings_by_id(base, ids)
    twin = fit_rows[nearest(emb[fit_rows], emb[placed], 1)[:, 0]]
    extent = np.linalg.norm(xy.max(axis=0) - xy.min(axis=0))
    assert np.median(np.linalg.norm(xy[placed] - xy[twin], axis=1)) < 0.05 * extent


def embeddings_by_id(base: str, ids: list[str]) -> np.ndarray:
    from exoray.index.embeddings import read_current_embeddings

    have, vectors, _ = read_current_embeddings(Store(base), "clip")
    assert have == ids
    return vectors


def test_record_says_what_was_built(built):
    base, _, summary = built
    record = map_info(base, "clip")
    assert summary["status"] == "built" and summary["why"] == "no map yet"
    assert record["method_used"] == "pacmap" and record["pca_dim"] == 50
    assert record["model_id"] == MODEL_ID and record["count"] == N
    assert record["fitted"] == SAMPLE and record["placement"].startswith("knn5")
    assert set(record["seconds"]) >= {"pca", "fit", "place", "total"}
    assert map_info(base, "clip:planted") == record  # the variant it was built from
    assert read_map(base, "clip:other") is None and read_map(base, "dino") is None
    assert read_map(Store(base)).equals(read_map(base, "clip"))  # a Store works as well


def test_same_seed_same_map_other_seed_other_map(built):
    base, _, _ = built
    again = build_map(base, "clip", sample=SAMPLE, seed=0, force=True)
    assert again["status"] == "built" and again["why"] == "--force"
    _, first, _ = map_arrays(read_map(base, "clip"))
    x = embeddings_by_id(base, read_map(base, "clip")["image_id"].to_pylist())
    one = layout_2d(x, sample=SAMPLE, seed=0)
    assert np.array_equal(one.xy, first) and one.fitted.sum() == SAMPLE
    other = layout_2d(x, sample=SAMPLE, seed=1)
    assert not np.allclose(other.xy, first)


# ----------------------------------------------------------------------------- reruns


def test_rerun_is_a_no_op_until_something_changes(work, capsys):
    base, _ = work
    store = Store(base)
    pointer = store.read_bytes("maps/clip.json")
    assert main(["map", base, "--sample", str(SAMPLE)]) == 0
    out = capsys.readouterr().out
    assert "map is up to date (240 points, pacmap" in out and "--force rebuilds" in out
    assert store.read_bytes("maps/clip.json") == pointer
    # A sample at least as large as the set fits the same points: still up to date.
    big = build_map(base, "clip", sample=N, seed=0)
    assert big["status"] == "built" and big["why"] == f"sample {SAMPLE} -> {N}"
    assert build_map(base, "clip", sample=10 * N, seed=0)["status"] == "up to date"
    # Another method or seed is another map.
    assert build_map(base, "clip", sample=N, seed=3)["why"] == "seed 0 -> 3"
    assert len(builds(base)) == 2  # the new build and the one the old pointer named


def test_deleted_image_rebuilds_without_it(work, capsys):
    base, _ = work
    images = Path(base).parent / "images"
    gone = read_manifest(Store(base)).sort_by("image_id").to_pylist()[0]
    (images / gone["relpath"]).unlink()
    manifest.run(base, images=images)
    assert main(["status", base]) == 0
    line = next(ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("map clip"))
    assert "out of date (embeddings changed (239 current, 240 placed))" in line
    assert f"`exoray map {base} --model clip` rebuilds it" in line
    assert main(["map", base, "--sample", str(SAMPLE)]) == 0
    out = capsys.readouterr().out
    assert "building the map (embeddings changed)" in out and "239 points" in out
    assert main(["status", base]) == 0
    assert "; up to date" in capsys.readouterr().out
    assert "pacmap: fitted 150 points in" in out and "placed 89 more points" in out
    assert gone["image_id"] not in read_map(base)["image_id"].to_pylist()


# ----------------------------------------------------------------------------- kill -9


def test_sigkill_before_the_pointer_leaves_the_old_map(work, tmp_path):
    base, _ = work
    before, old_builds = read_map(base), builds(base)
    marker = tmp_path / "fired"
    proc = procs.start("map", base, "--sample", str(SAMPLE), "--force", "-q",
                       failpoint=f"map_before_pointer=killpg:{marker}")
    code, out, err = procs.finish(proc)
    assert code == -signal.SIGKILL and marker.exists(), (code, out, err)
    assert read_map(base).equals(before)  # readers still see the complete old map
    orphan = set(builds(base)) - set(old_builds)
    assert len(orphan) == 1  # ... beside the killed run's published but unnamed file
    code, out, err = procs.finish(procs.start("map", base, "--sample", str(SAMPLE), "-q"))
    assert code == 0 and "map is up to date" in out, err  # the old map was never torn
    code, out, err = procs.finish(procs.start("map", base, "--sample", str(SAMPLE), "--force",
                                              "--json"))
    assert code == 0, err
    assert json.loads(out)["status"] == "built"
    assert read_map(base).equals(before)  # same embeddings, same seed: the same map
    kept = builds(base)  # the orphan is gone; the build the old pointer named is kept
    assert not orphan & set(kept) and map_info(base)["build"] in kept and len(kept) == 2


def test_sigkill_of_a_first_map_leaves_none(tmp_path):
    base, _ = make_base(tmp_path / "fresh", n=30)
    marker = tmp_path / "fired"
    code, _, err = procs.finish(procs.start("map", base, "-q",
                                            failpoint=f"map_before_pointer=killpg:{marker}"))
    assert code == -signal.SIGKILL, err
    assert read_map(base) is None and map_info(base) is None
    assert build_map(base)["count"] == 30 and read_map(base).num_rows == 30


# ----------------------------------------------------------------------------- small sets, errors


def test_a_tiny_set_gets_its_principal_components(tmp_path):
    base, _ = make_base(tmp_path / "tiny", n=MIN_FIT_POINTS - 1)
    summary = build_map(base)
    assert summary["method_used"] == "pca" and summary["fitted"] == MIN_FIT_POINTS - 1
    ids, xy, fitted = map_arrays(read_map(base))
    assert len(ids) == MIN_FIT_POINTS - 1 and fitted.all() and np.ptp(xy, axis=0).min() > 0
    one = layout_2d(np.ones((1, 8), np.float32) / np.sqrt(8))
    assert one.method == "pca" and one.xy.tolist() == [[0.0, 0.0]]


def cli_error(capsys, *argv: str) -> str:
    assert main(list(argv)) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


def test_cli_errors_are_one_line_and_name_the_fix(built, tmp_path, capsys):
    base, _, _ = built
    err = cli_error(capsys, "map", base, "--model", "dino")
    assert "no dino embeddings" in err and f"run `exoray embed {base} --model dino` first" in err
    assert "unknown model 'sift'" in cli_error(capsys, "map", base, "--model", "sift")
    assert "does not exist" in cli_error(capsys, "map", str(tmp_path / "nope"))
    empty = tmp_path / "empty"
    empty.mkdir()
    assert f"run `exoray embed {empty} --model clip` first" in cli_error(capsys, "map",
                                                                           str(empty))
    assert main(["map", base, "--sample", "0"]) == 2
    assert "'0' is not a positive integer" in capsys.readouterr().err
    assert main(["map", base, "--method", "tsne"]) == 2
    assert "invalid choice: 'tsne'" in capsys.readouterr().err


def test_a_missing_package_names_the_pip_install(work, monkeypatch, capsys):
    base, _ = work
    monkeypatch.setitem(sys.modules, "umap", None)
    err = cli_error(capsys, "map", base, "--method", "umap")
    assert "pip install 'exoray[map]' (or pip install umap-learn)" in err
    assert map_info(base)["method"] == "pacmap"  # the old map stays


@pytest.mark.slow  # numba compiles UMAP on its first fit in a process: ~20 s CPU
def test_umap_keeps_clusters_apart_too(built):
    base, labels, _ = built
    ids = read_map(base)["image_id"].to_pylist()
    layout = layout_2d(embeddings_by_id(base, ids), method="umap", sample=SAMPLE, seed=0)
    assert layout.method == "umap" and layout.fitted.sum() == SAMPLE
    truth = np.array([labels[i] for i in ids])
    assert (truth[nearest(layout.xy, layout.xy, 9)[:, 1:]] == truth[:, None]).mean() >= 0.95


@pytest.mark.parametrize("n_fitted, n_queries", [(2_000, 3_000), (10_000, 20_000)])
def test_placement_puts_points_by_their_cluster(n_fitted, n_queries):
    from exoray.embedmap.place import place, placement_label

    x, labels = clustered_vectors(n_fitted + n_queries, 50, 8, seed=2, spread=0.5)
    centres = np.random.default_rng(0).uniform(-50, 50, (8, 2)).astype(np.float32)
    fitted_xy = centres[labels[:n_fitted]] + np.random.default_rng(1).normal(
        0, 1, (n_fitted, 2)).astype(np.float32)
    xy = place(x[:n_fitted], fitted_xy, x[n_fitted:])
    search = "exact" if n_fitted < 10_000 else "ivf"
    assert placement_label(n_fitted, n_queries) == f"knn5-{search}"
    nearest_centre = np.argmin(((xy[:, None, :] - centres[None]) ** 2).sum(-1), axis=1)
    assert (nearest_centre == labels[n_fitted:]).mean() >= 0.99
    twins = place(x[:n_fitted], fitted_xy, x[:50])  # a duplicate lands on its twin
    assert np.allclose(twins, fitted_xy[:50], atol=1e-4)


def test_help_says_every_default(capsys):
    import argparse

    from exoray.cli.main import build_parser

    assert main(["map", "--help"]) == 0
    assert "usage: exoray map" in capsys.readouterr().out
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    for action in sub.choices["map"]._actions:
        if action.option_strings and action.nargs != 0 and action.default not in (
                None, argparse.SUPPRESS):
            assert "default" in action.help, action.option_strings


def test_status_shows_the_map_it_built(built):
    from exoray.engine.status import collect_status, format_status

    base, labels, summary = built
    text = format_status(collect_status(base))
    line = next(ln for ln in text.splitlines() if ln.startswith("map clip"))
    assert f"{len(labels)} of {len(labels)} images placed" in line
    assert "built 20" in line and line.endswith("; up to date")
