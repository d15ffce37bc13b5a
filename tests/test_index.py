"""Phase VII indices: kinds, recall against exact search, growth, files on disk, VectorIndex."""

from __future__ import annotations

import json

import faiss  # noqa: E402
import numpy as np
import pytest

from exoray.index import (
    INDEX_KINDS,
    IndexFileError,
    VectorIndex,
    add_to_index,
    build_index,
    choose_index_kind,
    clustered_vectors,
    estimate_index_bytes,
    index_kind,
    index_supports_add,
    l2_normalize,
    load_index_dir,
    save_index_dir,
    search_index,
)
from exoray.index.params import ivfpq_params, pq_subquantizers

pytestmark = pytest.mark.usefixtures("one_faiss_thread")

N_BASE = 20_000
N_QUERY = 300
DIM = 128
GiB = 1024**3


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    """(base vectors, held-out queries) from the same 40 planted clusters."""
    x, _ = clustered_vectors(N_BASE + N_QUERY, DIM, 40, seed=1)
    return x[:N_BASE], x[N_BASE:]


@pytest.fixture(scope="module")
def indices(data: tuple[np.ndarray, np.ndarray]) -> dict[str, object]:
    base, _ = data
    return {kind: build_index(base, kind, seed=0) for kind in INDEX_KINDS}


def ids_for(n: int, start: int = 0) -> list[str]:
    return [f"img/{i:06d}.jpg" for i in range(start, start + n)]


def recall_at(truth: np.ndarray, found: np.ndarray) -> float:
    return float(
        np.mean([len(set(t) & set(f)) / len(t) for t, f in zip(truth, found, strict=True)])
    )


# ----------------------------------------------------------------------------- kind choice


def test_choose_index_kind_thresholds() -> None:
    assert choose_index_kind(500, 512, memory_bytes=1) == "flat"  # tiny: always flat
    assert choose_index_kind(100_000, 512, memory_bytes=24 * GiB) == "flat"
    assert choose_index_kind(300_000, 512, memory_bytes=24 * GiB) == "flat"
    assert choose_index_kind(300_001, 512, memory_bytes=24 * GiB) == "hnsw"
    assert choose_index_kind(1_000_000, 512, memory_bytes=24 * GiB) == "hnsw"
    # 1M x 512 float32 = 2 GiB > half of 3 GiB
    assert choose_index_kind(1_000_000, 512, memory_bytes=3 * GiB) == "ivfpq"
    assert choose_index_kind(200_000, 512, memory_bytes=GiB // 2) == "ivfpq"
    assert choose_index_kind(10, 4) in INDEX_KINDS  # machine memory by default
    with pytest.raises(ValueError, match="n=0"):
        choose_index_kind(0, 512)
    with pytest.raises(ValueError, match="memory_bytes"):
        choose_index_kind(10_000, 512, memory_bytes=0)


def test_ivfpq_params_are_consistent() -> None:
    for n, dim in [(1_000, 64), (20_000, 128), (1_000_000, 512), (5_000_000, 768)]:
        p = ivfpq_params(n, dim)
        assert dim % p.m == 0
        assert p.n_train <= n and p.nlist * 39 <= p.n_train
        assert 2**p.nbits * 39 <= p.n_train and 4 <= p.nbits <= 8
        assert 1 <= p.nprobe <= p.nlist
    assert pq_subquantizers(100) == 25 and pq_subquantizers(512) == 64
    assert estimate_index_bytes("ivfpq", 1000, 512) < estimate_index_bytes("flat", 1000, 512) / 3
    with pytest.raises(ValueError, match="at least 1000"):
        ivfpq_params(500, 64)


def test_unknown_kind_lists_valid_ones(data: tuple[np.ndarray, np.ndarray]) -> None:
    with pytest.raises(ValueError, match="'ivf'.*flat, hnsw, ivfpq"):
        build_index(data[0][:100], "ivf")
    with pytest.raises(ValueError, match="flat, hnsw, ivfpq"):
        index_supports_add("annoy")
    assert all(index_supports_add(kind) for kind in INDEX_KINDS)


def test_auto_builds_flat_for_small(data: tuple[np.ndarray, np.ndarray]) -> None:
    assert index_kind(build_index(data[0][:2000])) == "flat"


# ----------------------------------------------------------------------------- input checks


def test_rejects_unnormalised_and_bad_shapes(data: tuple[np.ndarray, np.ndarray]) -> None:
    base = data[0][:100]
    with pytest.raises(ValueError, match="L2-normalised.*row 0"):
        build_index(base * 2)
    zeros = base.copy()
    zeros[7] = 0
    with pytest.raises(ValueError, match="row 7"):
        build_index(zeros)
    with pytest.raises(ValueError, match="2-D"):
        build_index(base[None])
    with pytest.raises(ValueError, match="empty|at least one"):
        build_index(np.empty((0, DIM), np.float32))
    index = build_index(base, "flat")
    with pytest.raises(ValueError, match="dim 64 but the index holds dim 128"):
        search_index(index, l2_normalize(np.ones((1, 64))), 5)
    with pytest.raises(ValueError, match="k must be a positive integer"):
        search_index(index, base[:1], 0)
    # float64 input is accepted and converted
    assert search_index(index, base[:2].astype(np.float64), 1)[1][:, 0].tolist() == [0, 1]


# ----------------------------------------------------------------------------- search quality


@pytest.mark.parametrize("kind", INDEX_KINDS)
def test_own_row_comes_first(
    indices: dict[str, object], data: tuple[np.ndarray, np.ndarray], kind: str
) -> None:
    base, _ = data
    rows = np.arange(0, N_BASE, 40)
    scores, found = search_index(indices[kind], base[rows], 3)
    assert np.array_equal(found[:, 0], rows)
    assert np.all(scores[:, 0] > 0.98) and np.all(np.diff(scores, axis=1) <= 1e-6)


@pytest.mark.parametrize("kind", ["hnsw", "ivfpq"])
def test_recall_at_10_vs_exact(
    indices: dict[str, object], data: tuple[np.ndarray, np.ndarray], kind: str
) -> None:
    _, queries = data
    _, truth = search_index(indices["flat"], queries, 10)
    _, found = search_index(indices[kind], queries, 10)
    assert recall_at(truth, found) >= 0.95


def test_fewer_vectors_than_k_pads_with_minus_one(data: tuple[np.ndarray, np.ndarray]) -> None:
    index = build_index(data[0][:3], "flat")
    _, rows = search_index(index, data[0][:1], 5)
    assert rows[0, 0] == 0 and sorted(rows[0, :3]) == [0, 1, 2]
    assert rows[0, 3:].tolist() == [-1, -1]
    hits = VectorIndex(index, ids_for(3)).search(data[0][0], 5)
    assert len(hits) == 1 and len(hits[0]) == 3 and hits[0][0][0] == "img/000000.jpg"


# ----------------------------------------------------------------------------- growth


@pytest.mark.parametrize("kind", INDEX_KINDS)
def test_add_grows_and_finds_new_vectors(data: tuple[np.ndarray, np.ndarray], kind: str) -> None:
    base, _ = data
    first, later = base[:15_000], base[15_000:]
    index = build_index(first, kind, seed=0)
    assert add_to_index(index, later) == N_BASE == index.ntotal
    rows = np.arange(15_000, N_BASE, 50)
    _, found = search_index(index, base[rows], 1)
    assert np.array_equal(found[:, 0], rows)


def test_vector_index_add_checks_ids(data: tuple[np.ndarray, np.ndarray]) -> None:
    base, _ = data
    vi = VectorIndex.build(
        base[:100], ids_for(100), {"model_id": "m", "parts": ["p0"]}, kind="flat"
    )
    vi.add(base[100:110], ids_for(10, start=100), parts=["p1"])
    assert len(vi) == 110 and vi.meta["count"] == 110 and vi.meta["parts"] == ["p0", "p1"]
    assert vi.search(base[105], 1)[0][0][0] == "img/000105.jpg"
    with pytest.raises(ValueError, match="duplicated.*img/000003.jpg"):
        vi.add(base[110:111], ["img/000003.jpg"])
    with pytest.raises(ValueError, match="2 image_ids given for 1 vectors"):
        vi.add(base[110:111], ["a", "b"])
    with pytest.raises(ValueError, match="non-empty strings; row 0"):
        vi.add(base[110:111], [""])
    assert len(vi) == 110


# ----------------------------------------------------------------------------- search by id


@pytest.mark.parametrize("kind", INDEX_KINDS)
def test_search_by_id_excludes_self(
    indices: dict[str, object], data: tuple[np.ndarray, np.ndarray], kind: str
) -> None:
    base, _ = data
    vi = VectorIndex(indices[kind], ids_for(N_BASE))
    _, truth = search_index(indices["flat"], base[123], 6)
    hits = vi.search_by_id("img/000123.jpg", 5)
    assert len(hits) == 5 and all(image_id != "img/000123.jpg" for image_id, _ in hits)
    expected = {f"img/{r:06d}.jpg" for r in truth[0, 1:]}
    assert len(expected & {image_id for image_id, _ in hits}) >= 4
    if kind != "ivfpq":  # ivfpq reconstructs an 8-bit copy, so its scores differ slightly
        assert hits == vi.search_by_id("img/000123.jpg", 5, vector=base[123])
    with pytest.raises(KeyError, match="nope.jpg"):
        vi.search_by_id("nope.jpg", 5)


def test_search_by_id_on_bare_ivfpq_uses_direct_map(data: tuple[np.ndarray, np.ndarray]) -> None:
    base = data[0][:5000]
    ivf = faiss.IndexIVFPQ(faiss.IndexFlatIP(DIM), DIM, 16, 16, 8, faiss.METRIC_INNER_PRODUCT)
    ivf.train(base)
    ivf.add(base)
    ivf.nprobe = 8
    vi = VectorIndex(ivf, ids_for(5000))
    assert vi.kind == "ivfpq"
    assert float(vi.vector("img/000010.jpg") @ base[10]) > 0.8
    assert len(vi.search_by_id("img/000010.jpg", 3)) == 3


# ----------------------------------------------------------------------------- files


META = {"model_id": "ViT-B-32/openai", "parts": ["part-r1-0-0.parquet", "part-r1-1-0.parquet"]}


@pytest.mark.parametrize("kind", INDEX_KINDS)
def test_save_load_roundtrip(
    tmp_path, indices: dict[str, object], data: tuple[np.ndarray, np.ndarray], kind: str
) -> None:
    base, queries = data
    paths = save_index_dir(tmp_path, indices[kind], ids_for(N_BASE), META, name="clip")
    assert [p.name for p in paths.all()] == ["clip.faiss", "clip.ids.parquet", "clip.meta.json"]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in paths.all())
    index, ids, meta = load_index_dir(tmp_path, "clip")
    assert ids.tolist() == ids_for(N_BASE)
    assert meta["model_id"] == "ViT-B-32/openai" and meta["parts"] == META["parts"]
    assert (meta["dim"], meta["kind"], meta["count"]) == (DIM, kind, N_BASE)
    assert meta["built_at"] and meta["exoray_version"] and meta["name"] == "clip"
    before = search_index(indices[kind], queries[:50], 10)
    after = search_index(index, queries[:50], 10)
    assert np.array_equal(before[1], after[1]) and np.allclose(before[0], after[0])


def test_vector_index_save_load_and_default_name(
    tmp_path, data: tuple[np.ndarray, np.ndarray]
) -> None:
    base, _ = data
    vi = VectorIndex.build(base[:500], ids_for(500), {"model_id": "ViT-B-32/openai"}, kind="hnsw")
    paths = vi.save(tmp_path)
    assert paths.index.name == "ViT-B-32_openai.faiss"
    loaded = VectorIndex.load(tmp_path, "ViT-B-32_openai")
    assert len(loaded) == 500 and loaded.kind == "hnsw" and "img/000007.jpg" in loaded
    assert loaded.search_by_id("img/000007.jpg", 3) == vi.search_by_id("img/000007.jpg", 3)


def test_save_validates_inputs(tmp_path, indices: dict[str, object]) -> None:
    index = indices["flat"]
    with pytest.raises(ValueError, match="model_id"):
        save_index_dir(tmp_path, index, ids_for(N_BASE), {"parts": []}, name="x")
    with pytest.raises(ValueError, match="19999 image_ids given for an index of 20000"):
        save_index_dir(tmp_path, index, ids_for(N_BASE - 1), META, name="x")
    dupes = ids_for(N_BASE)
    dupes[5] = dupes[4]
    with pytest.raises(ValueError, match="duplicated"):
        save_index_dir(tmp_path, index, dupes, META, name="x")
    with pytest.raises(ValueError, match="index name"):
        save_index_dir(tmp_path, index, ids_for(N_BASE), META, name="../evil")
    assert list(tmp_path.iterdir()) == []


@pytest.fixture
def saved(tmp_path, data: tuple[np.ndarray, np.ndarray]):
    index = build_index(data[0][:2000], "hnsw")
    return save_index_dir(tmp_path / "indices", index, ids_for(2000), META, name="clip")


def test_truncated_index_file_says_rebuild(saved) -> None:
    blob = saved.index.read_bytes()
    saved.index.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(
        IndexFileError, match=r"clip.faiss.*exoray index BASE --model clip --rebuild"
    ):
        load_index_dir(saved.index.parent, "clip")


def test_garbage_and_empty_index_file_say_rebuild(saved) -> None:
    for blob in (b"", b"not a faiss index at all" * 10):
        saved.index.write_bytes(blob)
        with pytest.raises(IndexFileError, match="--rebuild"):
            load_index_dir(saved.index.parent, "clip")


def test_corrupt_id_map_and_meta_say_rebuild(saved) -> None:
    good_ids = saved.ids.read_bytes()
    saved.ids.write_bytes(good_ids[:100])
    with pytest.raises(IndexFileError, match="id map.*--rebuild"):
        load_index_dir(saved.index.parent, "clip")
    saved.ids.write_bytes(good_ids)
    meta = json.loads(saved.meta.read_text())
    saved.meta.write_text(json.dumps({**meta, "count": 1999}))
    with pytest.raises(IndexFileError, match="count=1999.*--rebuild"):
        load_index_dir(saved.index.parent, "clip")
    saved.meta.write_text("{not json")
    with pytest.raises(IndexFileError, match="JSON.*--rebuild"):
        load_index_dir(saved.index.parent, "clip")


def test_missing_index_lists_available(saved) -> None:
    with pytest.raises(FileNotFoundError, match="'dino'.*available: clip"):
        load_index_dir(saved.index.parent, "dino")
    saved.ids.unlink()
    with pytest.raises(FileNotFoundError, match="missing clip.ids.parquet"):
        load_index_dir(saved.index.parent, "clip")
