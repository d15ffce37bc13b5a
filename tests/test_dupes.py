"""Tests for exoray.image.dupes: exact, perceptual-hash and embedding duplicate grouping."""

from __future__ import annotations

import sys

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from exoray.image import dupes, hash_index
from exoray.image.dupes import (
    SCHEMA,
    find_embedding_duplicates,
    find_hash_duplicates,
    merge_duplicate_tables,
    summarize_duplicates,
)

D = 6


def hx(value: int) -> str:
    return f"{value:016x}"


def flip(value: int, bits: list[int]) -> int:
    for b in bits:
        value ^= 1 << b
    return value


def groups_of(table: pa.Table) -> set[frozenset[str]]:
    """Grouping as a set of id sets (independent of group numbering)."""
    out: dict[int, set[str]] = {}
    for image_id, gid in zip(
        table.column("image_id").to_pylist(), table.column("group_id").to_pylist(), strict=True
    ):
        out.setdefault(gid, set()).add(image_id)
    return {frozenset(s) for s in out.values()}


def kinds_of(table: pa.Table) -> dict[str, str]:
    return dict(
        zip(table.column("image_id").to_pylist(), table.column("kind").to_pylist(), strict=True)
    )


def reference_components(n: int, pairs: set[tuple[int, int]]) -> set[frozenset[int]]:
    """Plain Python union-find, the obviously-correct reference."""
    parent = list(range(n))

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for a, b in pairs:
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    comps: dict[int, set[int]] = {}
    for i in range(n):
        comps.setdefault(find(i), set()).add(i)
    return {frozenset(c) for c in comps.values() if len(c) > 1}


def brute_pairs(hashes: np.ndarray, max_distance: int) -> set[tuple[int, int]]:
    dist = np.bitwise_count(hashes[:, None] ^ hashes[None, :])
    i, j = np.nonzero(np.triu(dist <= max_distance, k=1))
    return set(zip(i.tolist(), j.tolist(), strict=True))


def planted_hashes(n_random: int, seed: int, max_distance: int) -> np.ndarray:
    """Random 64-bit hashes plus copies at every distance 0 .. max_distance + 2."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 2**64, size=n_random, dtype=np.uint64)
    planted = []
    for dist in range(max_distance + 3):
        for src in rng.choice(n_random, size=40, replace=False):
            bits = rng.choice(64, size=dist, replace=False).tolist()
            planted.append(flip(int(base[src]), bits))
    # a chain: each step within reach, the ends not
    start = int(base[0])
    for step in range(1, 5):
        planted.append(flip(start, list(range(0, 4 * step))))
    return np.concatenate([base, np.array(planted, dtype=np.uint64)])


# --------------------------------------------------------------------------------------------
# hash duplicates


def test_exact_duplicates_grouped_and_singletons_dropped() -> None:
    ids = ["a", "b", "c", "d", "e"]
    content = ["h1", "h2", "h1", "h3", "h1"]
    phash = [hx(0), hx(2**64 - 1), hx(0), hx(0xFFFFFFFF00000000), hx(0)]
    table = find_hash_duplicates(ids, content, phash)
    assert table.schema == SCHEMA
    assert groups_of(table) == {frozenset({"a", "c", "e"})}
    assert set(kinds_of(table).values()) == {"exact"}


def test_near_within_distance_grouped_beyond_not() -> None:
    base = 0x0123456789ABCDEF
    ids = ["base", "at_max", "past_max", "far"]
    phash = [
        hx(base),
        hx(flip(base, [0, 9, 18, 27, 36, 45])),  # distance 6
        hx(flip(base, [1, 10, 19, 28, 37, 46, 55])),  # distance 7 from base, 13 from at_max
        hx(~base & (2**64 - 1)),
    ]
    table = find_hash_duplicates(ids, ["c1", "c2", "c3", "c4"], phash, max_distance=6)
    assert groups_of(table) == {frozenset({"base", "at_max"})}
    assert set(kinds_of(table).values()) == {"near"}
    # a tighter threshold splits them
    assert find_hash_duplicates(ids, ["c1", "c2", "c3", "c4"], phash, max_distance=5).num_rows == 0


def test_transitive_chain_is_one_group() -> None:
    a = 0
    b = flip(a, [0, 1, 2, 3])  # d(a, b) = 4
    c = flip(b, [10, 11, 12, 13])  # d(b, c) = 4, d(a, c) = 8 > 6
    table = find_hash_duplicates(["a", "b", "c"], ["1", "2", "3"], [hx(a), hx(b), hx(c)])
    assert groups_of(table) == {frozenset({"a", "b", "c"})}


def test_exact_and_near_join_into_one_group() -> None:
    p = 0xFFFF0000FFFF0000
    ids = ["x1", "x2", "y", "z"]
    content = ["same", "same", "other", "third"]
    phash = [hx(p), hx(p), hx(flip(p, [3, 40])), hx(flip(p, [5]))]
    table = find_hash_duplicates(ids, content, phash)
    assert groups_of(table) == {frozenset(ids)}
    assert kinds_of(table) == {"x1": "exact", "x2": "exact", "y": "near", "z": "near"}


def test_identical_phash_different_content_is_near() -> None:
    table = find_hash_duplicates(["a", "b"], ["c1", "c2"], [hx(7), hx(7)], max_distance=0)
    assert groups_of(table) == {frozenset({"a", "b"})}
    assert set(kinds_of(table).values()) == {"near"}


def test_missing_hashes_are_skipped() -> None:
    ids = ["a", "b", "c", "d", "e", "f"]
    content = [None, "", "k", "k", None, ""]
    phash = [hx(1), hx(1), None, "", None, ""]
    table = find_hash_duplicates(ids, content, phash)
    assert groups_of(table) == {frozenset({"a", "b"}), frozenset({"c", "d"})}
    assert kinds_of(table) == {"a": "near", "b": "near", "c": "exact", "d": "exact"}


def test_group_ids_deterministic_and_ordered_by_smallest_id() -> None:
    rng = np.random.default_rng(1)
    hashes = planted_hashes(300, seed=2, max_distance=D)
    ids = [f"img{i:04d}" for i in range(hashes.size)]
    content = [f"c{i % 350}" for i in range(hashes.size)]  # some exact repeats too
    phash = [hx(int(h)) for h in hashes]
    first = find_hash_duplicates(ids, content, phash)
    perm = rng.permutation(hashes.size)
    second = find_hash_duplicates(
        [ids[i] for i in perm], [content[i] for i in perm], [phash[i] for i in perm]
    )
    assert first.equals(second)
    gids = first.column("group_id").to_pylist()
    assert gids == sorted(gids) and gids[0] == 0 and set(gids) == set(range(max(gids) + 1))
    smallest = {}
    for image_id, gid in zip(first.column("image_id").to_pylist(), gids, strict=True):
        smallest.setdefault(gid, image_id)
    ordered = [smallest[g] for g in sorted(smallest)]
    assert ordered == sorted(ordered)


def test_arrow_inputs_and_uppercase_hex_accepted() -> None:
    ids = pa.chunked_array([["a", "b"], ["c"]])
    table = find_hash_duplicates(
        ids, pa.array(["1", "2", "3"]), pa.array(["00000000000000AB", "00000000000000ab", None])
    )
    assert groups_of(table) == {frozenset({"a", "b"})}


def test_empty_input() -> None:
    assert find_hash_duplicates([], [], []).equals(SCHEMA.empty_table())


@pytest.mark.parametrize(
    "bad",
    ["123", "0123456789abcdefff", "0123456789abcdeg", "0x0123456789abcd", "0123456789abcdé"],
)
def test_bad_phash_names_image(bad: str) -> None:
    with pytest.raises(ValueError, match="'broken.jpg'"):
        find_hash_duplicates(["ok.jpg", "broken.jpg"], ["1", "2"], [hx(5), bad])


def test_bad_inputs_raise() -> None:
    with pytest.raises(ValueError, match="same length"):
        find_hash_duplicates(["a", "b"], ["1"], [hx(1), hx(2)])
    with pytest.raises(ValueError, match="unique"):
        find_hash_duplicates(["a", "a"], ["1", "2"], [hx(1), hx(2)])
    with pytest.raises(ValueError, match="null"):
        find_hash_duplicates(["a", None], ["1", "2"], [hx(1), hx(2)])
    with pytest.raises(ValueError, match="max_distance"):
        find_hash_duplicates(["a"], ["1"], [hx(1)], max_distance=64)
    with pytest.raises(TypeError, match="max_distance"):
        find_hash_duplicates(["a"], ["1"], [hx(1)], max_distance=True)
    with pytest.raises(TypeError, match="phashes"):
        find_hash_duplicates(["a"], ["1"], [12345])
    with pytest.raises(TypeError, match="image_ids"):
        find_hash_duplicates("abc", ["1", "2", "3"], [hx(1)] * 3)


# --------------------------------------------------------------------------------------------
# the multi-index search itself


@pytest.mark.parametrize("extra_chunks", [None, 0, 1, 2])
def test_multi_index_search_equals_brute_force(extra_chunks: int | None) -> None:
    hashes = planted_hashes(3000, seed=7, max_distance=D)
    expected = brute_pairs(hashes, D)
    # planted pairs at distance <= D must be among them, those at D+1, D+2 mostly not
    assert len(expected) >= 40 * (D + 1)
    found: set[tuple[int, int]] = set()
    for a, b in dupes._iter_near_pairs(hashes, D, extra_chunks=extra_chunks, pair_budget=5000):
        assert np.all(np.bitwise_count(hashes[a] ^ hashes[b]) <= D)
        found.update((min(x, y), max(x, y)) for x, y in zip(a.tolist(), b.tolist(), strict=True))
    assert found == expected
    roots = dupes._near_components(hashes, D, extra_chunks=extra_chunks, pair_budget=5000)
    got = {}
    for i, r in enumerate(roots.tolist()):
        got.setdefault(r, set()).add(i)
    assert {frozenset(c) for c in got.values() if len(c) > 1} == reference_components(
        hashes.size, expected
    )


@pytest.mark.parametrize("max_distance", [0, 1, 3, 10])
def test_multi_index_other_distances(max_distance: int) -> None:
    hashes = planted_hashes(800, seed=max_distance, max_distance=max_distance)
    found = set()
    for a, b in dupes._iter_near_pairs(hashes, max_distance):
        found.update((min(x, y), max(x, y)) for x, y in zip(a.tolist(), b.tolist(), strict=True))
    assert found == brute_pairs(hashes, max_distance)


def test_giant_bucket_is_processed_in_bounded_slices() -> None:
    # 1,500 distinct hashes that agree on their top 52 bits: most keys land in one bucket.
    rng = np.random.default_rng(3)
    low = rng.choice(2**12, size=1500, replace=False).astype(np.uint64)
    hashes = np.uint64(0xABCDEF0123456789 & ~(2**12 - 1)) | low
    n = hashes.size
    budget = 20_000  # one full bucket holds ~1.1M candidate pairs
    packed = []
    for a, b in dupes._iter_near_pairs(hashes, D, extra_chunks=0, pair_budget=budget):
        assert a.size <= budget
        packed.append(np.minimum(a, b) * n + np.maximum(a, b))
    dist = np.bitwise_count(hashes[:, None] ^ hashes[None, :])
    i, j = np.nonzero(np.triu(dist <= D, k=1))
    np.testing.assert_array_equal(np.unique(np.concatenate(packed)), np.sort(i * n + j))
    table = find_hash_duplicates(
        [f"i{i}" for i in range(1500)], [str(i) for i in range(1500)], [hx(int(h)) for h in hashes]
    )
    assert table.column("group_id").to_pylist() == [0] * 1500


def test_find_hash_duplicates_matches_reference_grouping() -> None:
    hashes = planted_hashes(1500, seed=11, max_distance=D)
    n = hashes.size
    ids = [f"{i:05d}" for i in range(n)]
    content = [f"c{i}" if i % 97 else "shared" for i in range(n)]
    table = find_hash_duplicates(ids, content, [hx(int(h)) for h in hashes])
    pairs = brute_pairs(hashes, D)
    shared = [i for i in range(n) if i % 97 == 0]
    pairs |= {(shared[0], s) for s in shared[1:]}
    expected = {frozenset(ids[i] for i in comp) for comp in reference_components(n, pairs)}
    assert groups_of(table) == expected


def test_union_find_matches_reference_on_chains_and_random_edges() -> None:
    rng = np.random.default_rng(5)
    n = 2000
    a = rng.integers(0, n, size=1500)
    b = rng.integers(0, n, size=1500)
    chain = np.arange(0, 600)
    a = np.concatenate([a, chain[:-1][::-1]])
    b = np.concatenate([b, chain[1:][::-1]])
    uf = dupes._UnionFind(n)
    half = a.size // 2
    uf.union(a[:half], b[:half])
    uf.union(a[half:], b[half:])
    roots = uf.roots()
    got: dict[int, set[int]] = {}
    for i, r in enumerate(roots.tolist()):
        got.setdefault(r, set()).add(i)
    expected = reference_components(n, set(zip(a.tolist(), b.tolist(), strict=True)))
    assert {frozenset(c) for c in got.values() if len(c) > 1} == expected
    assert all(r == min(got[r]) for r in got)


# --------------------------------------------------------------------------------------------
# the joint pHash + dHash rule (dhashes=): crops


def random_dhash(rng: np.random.Generator) -> int:
    """A 64-bit value with 24..40 set bits (an informative dHash, as photos have)."""
    while True:
        value = int(rng.integers(0, 2**63)) | (int(rng.integers(0, 2)) << 63)
        if 24 <= value.bit_count() <= 40:
            return value


def test_joint_rule_links_crops_that_phash_alone_misses() -> None:
    rng = np.random.default_rng(4)
    p, d = 0x0123456789ABCDEF, random_dhash(rng)
    ids = ["orig", "crop", "sum_too_far", "phash_too_far", "other"]
    phash = [p, flip(p, list(range(0, 48, 4))),  # 12 bits: beyond max_distance 6
             flip(p, list(range(1, 49, 4))),  # 12 bits
             flip(p, list(range(2, 64, 3))[:18]),  # 18 bits: beyond the pHash cap of 16
             ~p & (2**64 - 1)]
    dhash = [d, flip(d, [0, 9, 18, 27, 36, 45]),  # 12 + 6 = 18 <= 22
             flip(d, list(range(3, 63, 5))),  # 12 + 12 = 24 > 22
             d,  # 18 + 0
             random_dhash(rng)]
    content = [f"c{i}" for i in range(5)]
    ph, dh = [hx(v) for v in phash], [hx(v) for v in dhash]
    assert find_hash_duplicates(ids, content, ph).num_rows == 0  # pHash alone: no group
    table = find_hash_duplicates(ids, content, ph, dhashes=dh)
    assert groups_of(table) == {frozenset({"orig", "crop"})}
    assert set(kinds_of(table).values()) == {"near"}
    wider = find_hash_duplicates(ids, content, ph, dhashes=dh, max_joint_distance=24)
    assert groups_of(wider) == {frozenset({"orig", "crop", "sum_too_far"})}
    # pHash links still count with dhashes, whatever the dHash says
    close = [hx(p), hx(flip(p, [1, 2, 3])), hx(0), hx(2**64 - 1), hx(0xF0F0F0F0F0F0F0F0)]
    assert groups_of(find_hash_duplicates(ids, content, close, dhashes=dh)) == {
        frozenset({"orig", "crop"})}


def test_joint_rule_ignores_near_empty_dhashes() -> None:
    # A smooth sky or a blank page: dHash has few set bits and matches every other smooth image.
    p = 0x0123456789ABCDEF
    ids = ["a", "b"]
    phash = [hx(p), hx(flip(p, list(range(0, 40, 4))))]  # 10 bits apart
    for bits, grouped in ((0x3, False), (0x7F, False), (0xFF, True), (2**64 - 1 - 0x7F, False)):
        table = find_hash_duplicates(ids, ["1", "2"], phash, dhashes=[hx(bits), hx(bits)])
        assert (table.num_rows == 2) is grouped, hex(bits)


def test_joint_rule_inputs() -> None:
    ids, content = ["a", "b", "c"], ["1", "2", "3"]
    phash = [hx(1), hx(2), hx(3)]
    with pytest.raises(ValueError, match="'b'.*dhash|dhash.*'b'"):
        find_hash_duplicates(ids, content, phash, dhashes=[hx(5), "xyz", None])
    with pytest.raises(ValueError, match="same length"):
        find_hash_duplicates(ids, content, phash, dhashes=[hx(5)])
    with pytest.raises(ValueError, match="max_joint_distance"):
        find_hash_duplicates(ids, content, phash, dhashes=[hx(5)] * 3, max_joint_distance=128)
    with pytest.raises(TypeError, match="dhashes"):
        find_hash_duplicates(ids, content, phash, dhashes=[1, 2, 3])
    # a missing dHash (or pHash) only leaves that image out of the joint rule
    rng = np.random.default_rng(0)
    d = random_dhash(rng)
    p = 0x0123456789ABCDEF
    phash = [hx(p), hx(flip(p, list(range(0, 40, 4)))), None]
    table = find_hash_duplicates(ids, content, phash, dhashes=[hx(d), hx(d), hx(d)])
    assert groups_of(table) == {frozenset({"a", "b"})}
    table = find_hash_duplicates(ids, content, phash, dhashes=[hx(d), "", hx(d)])
    assert table.num_rows == 0


def planted_pairs(n_random: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Random (pHash, dHash) pairs plus copies at joint distances 0..26, pHash part 0..18."""
    rng = np.random.default_rng(seed)
    p = rng.integers(0, 2**64, size=n_random, dtype=np.uint64)
    d = rng.integers(0, 2**64, size=n_random, dtype=np.uint64)
    extra_p, extra_d = [], []
    for joint in range(27):
        for src in rng.choice(n_random, size=30, replace=False):
            dp = int(rng.integers(0, min(joint, 18) + 1))
            extra_p.append(flip(int(p[src]), rng.choice(64, size=dp, replace=False).tolist()))
            extra_d.append(flip(int(d[src]), rng.choice(64, size=joint - dp, replace=False).tolist()))
    return (np.concatenate([p, np.array(extra_p, dtype=np.uint64)]),
            np.concatenate([d, np.array(extra_d, dtype=np.uint64)]))


def brute_joint(p: np.ndarray, d: np.ndarray, max_joint: int, max_phash: int = 16) -> dict:
    """{(i, j): joint distance} for every pair within the joint rule, all pairs compared."""
    dp = np.bitwise_count(p[:, None] ^ p[None, :]).astype(int)
    joint = dp + np.bitwise_count(d[:, None] ^ d[None, :])
    i, j = np.nonzero(np.triu((dp <= max_phash) & (joint <= max_joint), k=1))
    return {(a, b): int(joint[a, b]) for a, b in zip(i.tolist(), j.tolist(), strict=True)}


@pytest.mark.parametrize("max_joint", [12, 22, 26])
def test_joint_search_finds_what_brute_force_finds(max_joint: int) -> None:
    p, d = planted_pairs(2500, seed=max_joint)
    expected = brute_joint(p, d, max_joint)
    assert len(expected) > 300
    found: set[tuple[int, int]] = set()
    for a, b in hash_index.iter_joint_pairs(p, d, max_joint, 16, pair_budget=4000):
        assert a.size <= 4000
        found.update((min(x, y), max(x, y)) for x, y in zip(a.tolist(), b.tolist(), strict=True))
    assert found <= set(expected)  # every pair yielded is verified
    missed = [t for pair, t in expected.items() if pair not in found]
    # A pair at the radius is missed with probability <= JOINT_MISS, closer pairs far less.
    assert all(t > max_joint - 4 for t in missed), missed
    assert len(missed) <= max(2, 3 * hash_index.JOINT_MISS * len(expected))
    # the plan keeps its promise
    k, tables = hash_index.plan_joint(p.size, max_joint)
    miss = (1 - hash_index.joint_hit_probability(k, max_joint)) ** tables
    assert miss <= hash_index.JOINT_MISS


def test_joint_search_same_pairs_whatever_the_order() -> None:
    p, d = planted_pairs(1000, seed=3)
    perm = np.random.default_rng(1).permutation(p.size)

    def pairs(pp: np.ndarray, dd: np.ndarray, names: np.ndarray) -> set[tuple[int, int]]:
        out = set()
        for a, b in hash_index.iter_joint_pairs(pp, dd, 22, 16):
            out.update((min(x, y), max(x, y)) for x, y in
                       zip(names[a].tolist(), names[b].tolist(), strict=True))
        return out

    assert pairs(p, d, np.arange(p.size)) == pairs(p[perm], d[perm], perm)


def test_joint_search_giant_bucket_in_bounded_slices() -> None:
    # 800 pairs that agree on all but 12 pHash bits and 12 dHash bits: most tables put them in
    # one bucket, so the long-run path enumerates hundreds of thousands of pairs in slices.
    rng = np.random.default_rng(9)
    low = rng.choice(2**24, size=800, replace=False).astype(np.uint64)
    p = np.uint64(0x0123456789ABCDEF & ~(2**12 - 1)) | (low & np.uint64(2**12 - 1))
    d = np.uint64(0x0F1E2D3C4B5A6978 & ~(2**12 - 1)) | (low >> np.uint64(12))
    n = p.size
    expected = brute_joint(p, d, 22)
    packed = []
    for a, b in hash_index.iter_joint_pairs(p, d, 22, 16, pair_budget=20_000):
        assert a.size <= 20_000
        packed.append(np.minimum(a, b) * n + np.maximum(a, b))
    found = np.unique(np.concatenate(packed))
    want = np.array(sorted(i * n + j for i, j in expected))
    assert np.isin(found, want).all() and found.size >= 0.99 * want.size


def test_find_hash_duplicates_with_dhashes_matches_reference_grouping() -> None:
    p, d = planted_pairs(1500, seed=5)
    n = p.size
    ids = [f"{i:05d}" for i in range(n)]
    content = [f"c{i}" for i in range(n)]
    table = find_hash_duplicates(ids, content, [hx(int(v)) for v in p],
                                 dhashes=[hx(int(v)) for v in d])
    got = groups_of(table)

    def grouping(max_joint: int) -> set[frozenset[str]]:
        pairs = brute_pairs(p, D) | set(brute_joint(p, d, max_joint))
        return {frozenset(ids[i] for i in c) for c in reference_components(n, pairs)}

    # Pairs well inside the default radius (22) are never missed; nothing beyond it is linked.
    strict, loose = grouping(18), grouping(22)
    assert all(any(c <= g for g in got) for c in strict)
    assert all(any(g <= c for c in loose) for g in got)
    # input order does not matter
    perm = np.random.default_rng(2).permutation(n)
    again = find_hash_duplicates([ids[i] for i in perm], [content[i] for i in perm],
                                 [hx(int(p[i])) for i in perm],
                                 dhashes=[hx(int(d[i])) for i in perm])
    assert again.equals(table)


# --------------------------------------------------------------------------------------------
# real photos (scikit-image): crops grouped, unrelated photos apart


def _jpeg(pixels: np.ndarray, quality: int = 90) -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def _edits(pixels: np.ndarray) -> dict[str, bytes]:
    """The outside check's edits: resize 50 %, JPEG 40, +20 % brightness, crops per side."""
    from PIL import Image, ImageEnhance

    im = Image.fromarray(pixels)
    h, w = pixels.shape[:2]

    def crop(f: float) -> np.ndarray:
        dy, dx = round(f * h), round(f * w)
        return pixels[dy : h - dy, dx : w - dx]

    return {
        "original": _jpeg(pixels),
        "resize50": _jpeg(np.asarray(im.resize((w // 2, h // 2), Image.LANCZOS))),
        "jpeg40": _jpeg(pixels, 40),
        "bright20": _jpeg(np.asarray(ImageEnhance.Brightness(im).enhance(1.2))),
        "crop2.5": _jpeg(crop(0.025)),
        "crop5": _jpeg(crop(0.05)),
    }


def test_real_photo_crops_grouped_and_other_photos_apart() -> None:
    data = pytest.importorskip(
        "skimage.data", reason="scikit-image is not installed (pip install scikit-image): "
        "no real photos to test on")
    from exoray.image.cheap_features import compute_features

    files: dict[str, bytes] = {}
    for name in ("astronaut", "coffee", "rocket"):
        for edit, blob in _edits(np.ascontiguousarray(getattr(data, name)())).items():
            files[f"{name}/{edit}"] = blob
    # Unrelated: other photos, and quadrants of the edited ones (same photo, other framing).
    for name in ("camera", "chelsea", "coins", "moon"):
        files[f"{name}/original"] = _jpeg(np.ascontiguousarray(getattr(data, name)()))
    for name in ("astronaut", "coffee"):
        pixels = getattr(data, name)()
        h, w = pixels.shape[:2]
        files[f"{name}-quadrant/original"] = _jpeg(np.ascontiguousarray(pixels[: h // 2, : w // 2]))
    ids = sorted(files)
    rows = [compute_features(files[i], name=i) for i in ids]
    content = [r["content_hash"] for r in rows]
    phash, dhash = [r["phash"] for r in rows], [r["dhash"] for r in rows]

    expected = {frozenset(i for i in ids if i.startswith(f"{name}/"))
                for name in ("astronaut", "coffee", "rocket")}
    assert groups_of(find_hash_duplicates(ids, content, phash, dhashes=dhash)) == expected
    # pHash alone (the old rule) leaves crops out: that is what dHash fixes
    old = groups_of(find_hash_duplicates(ids, content, phash))
    assert old != expected and all(any(g <= e for e in expected) for g in old)


# --------------------------------------------------------------------------------------------
# embedding duplicates


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def planted_vectors(seed: int = 0) -> tuple[list[str], np.ndarray]:
    rng = np.random.default_rng(seed)
    vec = rng.normal(size=(500, 64))
    vec[100] = vec[10] + rng.normal(scale=0.01, size=64)  # near-identical
    vec[101] = vec[10] + rng.normal(scale=0.01, size=64)
    vec[200] = vec[20]  # identical
    vec[300] = vec[30] + rng.normal(scale=2.0, size=64)  # related but not a duplicate
    return [f"v{i:03d}" for i in range(500)], unit(vec)


def test_embedding_duplicates_found() -> None:
    ids, vec = planted_vectors()
    table = find_embedding_duplicates(ids, vec, threshold=0.95)
    assert table.schema == SCHEMA
    assert groups_of(table) == {
        frozenset({"v010", "v100", "v101"}),
        frozenset({"v020", "v200"}),
    }
    assert set(table.column("kind").to_pylist()) == {"embedding"}
    # the threshold is inclusive: exactly-equal vectors match at 1.0
    assert groups_of(find_embedding_duplicates(ids, vec, threshold=1.0)) == {
        frozenset({"v020", "v200"})
    }


def test_embedding_transitivity_and_determinism() -> None:
    angle = np.deg2rad(15)  # cos 15deg ~ 0.966 >= 0.95, cos 30deg ~ 0.866 < 0.95
    vec = unit(
        np.array(
            [
                [1, 0, 0],
                [np.cos(angle), np.sin(angle), 0],
                [np.cos(2 * angle), np.sin(2 * angle), 0],
                [0, 0, 1],
            ]
        )
    )
    table = find_embedding_duplicates(["c", "b", "a", "z"], vec, threshold=0.95)
    assert table.column("image_id").to_pylist() == ["a", "b", "c"]
    assert table.column("group_id").to_pylist() == [0, 0, 0]


def test_embedding_bad_inputs() -> None:
    ids, vec = planted_vectors()
    with pytest.raises(ValueError, match="L2-normalised"):
        find_embedding_duplicates(ids, vec * 2)
    with pytest.raises(ValueError, match="rows"):
        find_embedding_duplicates(ids[:-1], vec)
    with pytest.raises(ValueError, match="2-D"):
        find_embedding_duplicates(ids, vec[:, 0])
    with pytest.raises(ValueError, match="threshold"):
        find_embedding_duplicates(ids, vec, threshold=1.5)
    broken = vec.copy()
    broken[7, 3] = np.nan
    with pytest.raises(ValueError, match="'v007'"):
        find_embedding_duplicates(ids, broken)
    assert find_embedding_duplicates([], np.zeros((0, 8), dtype=np.float32)).num_rows == 0


def test_embedding_without_faiss_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "faiss", None)
    ids, vec = planted_vectors()
    with pytest.raises(ImportError, match=r"exoray\[index\]"):
        find_embedding_duplicates(ids, vec)


# --------------------------------------------------------------------------------------------
# merging and summary


def dup_table(rows: list[tuple[str, int, str]]) -> pa.Table:
    ids, gids, kinds = zip(*rows, strict=True)
    return pa.table(
        {"image_id": list(ids), "group_id": list(gids), "kind": list(kinds)}, schema=SCHEMA
    )


def test_merge_joins_overlapping_groups_and_keeps_strongest_kind() -> None:
    hashes = dup_table(
        [("a", 0, "exact"), ("b", 0, "exact"), ("c", 0, "near"), ("x", 1, "near"), ("y", 1, "near")]
    )
    embeds = dup_table(
        [("c", 0, "embedding"), ("d", 0, "embedding"), ("y", 1, "embedding"), ("q", 1, "embedding")]
    )
    lone = dup_table([("m", 5, "embedding"), ("n", 5, "embedding")])
    merged = merge_duplicate_tables(hashes, embeds, lone)
    assert merged.schema == SCHEMA
    assert groups_of(merged) == {
        frozenset({"a", "b", "c", "d"}),
        frozenset({"m", "n"}),
        frozenset({"q", "x", "y"}),
    }
    assert kinds_of(merged) == {
        "a": "exact",
        "b": "exact",
        "c": "near",
        "d": "embedding",
        "m": "embedding",
        "n": "embedding",
        "q": "embedding",
        "x": "near",
        "y": "near",
    }
    assert merged.column("image_id").to_pylist()[:4] == ["a", "b", "c", "d"]
    assert merged.column("group_id").to_pylist() == [0, 0, 0, 0, 1, 1, 2, 2, 2]
    # order of arguments does not matter
    assert merge_duplicate_tables(lone, embeds, hashes).equals(merged)


def test_merge_of_real_finders() -> None:
    ids = ["a", "b", "c", "d"]
    hashes = find_hash_duplicates(
        ids, ["1", "1", "2", "3"], [hx(0), hx(0), hx(2**64 - 1), hx(0xFFFFFFFF00000000)]
    )
    vec = unit(np.array([[1, 0, 0], [0, 1, 0], [0, 1, 0.01], [0, 0, 1]], dtype=np.float64))
    embeds = find_embedding_duplicates(ids, vec)
    assert groups_of(merge_duplicate_tables(hashes, embeds)) == {frozenset({"a", "b", "c"})}


def test_merge_edge_cases() -> None:
    assert merge_duplicate_tables().equals(SCHEMA.empty_table())
    assert merge_duplicate_tables(SCHEMA.empty_table()).num_rows == 0
    with pytest.raises(ValueError, match="kind"):
        merge_duplicate_tables(dup_table([("a", 0, "similar"), ("b", 0, "similar")]))
    with pytest.raises(ValueError, match="group_id"):
        merge_duplicate_tables(pa.table({"image_id": ["a"], "kind": ["near"]}))
    with pytest.raises(TypeError, match="pyarrow.Table"):
        merge_duplicate_tables({"image_id": ["a"]})


def test_summarize() -> None:
    table = dup_table(
        [
            ("a", 0, "exact"),
            ("b", 0, "exact"),
            ("c", 0, "near"),
            ("d", 1, "embedding"),
            ("e", 1, "embedding"),
            ("f", 2, "near"),
            ("g", 2, "near"),
            ("h", 2, "near"),
            ("i", 2, "near"),
        ]
    )
    summary = summarize_duplicates(table, top=2)
    assert summary == {
        "groups": 3,
        "images_in_groups": 9,
        "redundant_images": 6,
        "groups_by_kind": {"exact": 1, "near": 2, "embedding": 1},
        "images_by_kind": {"exact": 2, "near": 5, "embedding": 2},
        "largest_groups": [{"group_id": 2, "size": 4}, {"group_id": 0, "size": 3}],
    }
    empty = summarize_duplicates(SCHEMA.empty_table())
    assert empty["groups"] == 0 and empty["redundant_images"] == 0 and empty["largest_groups"] == []


# --------------------------------------------------------------------------------------------
# pipelines.dupes on a real BASE (Phase II written in-process, no Ray) and `exoray dupes --list`


def make_base(tmp_path, *, copies: int = 1):
    """Images + manifest + Phase II parts, each feature row published ``copies`` times (as a
    race between two runs would leave them). Returns (base, root, truth)."""
    from exoray.dev.synth import make_image_set
    from exoray.engine.schemas import FEATURES_SCHEMA, IMAGE_KEY
    from exoray.engine.stages.features import FeatureWorker
    from exoray.image.manifest import read_manifest
    from exoray.storage import layout
    from exoray.storage.parts import write_part
    from exoray.storage.store import Store
    from pipelines import manifest

    root, base = tmp_path / "images", tmp_path / "base"
    truth = make_image_set(root, n=14, seed=3, max_megapixels=0.3)
    manifest.run(base, images=root)
    write_features(base, root)
    store = Store(str(base))
    rows = read_manifest(store).filter(pc.equal(read_manifest(store)["status"], "present"))
    for k in range(1, copies):
        feats = FeatureWorker(str(root), f"race{k}")(rows.select(["image_id", "relpath",
                                                                   "fingerprint"]))
        write_part(store, layout.FEATURES, feats.select(FEATURES_SCHEMA.names),
                   run_id=f"race{k}", key=IMAGE_KEY, schema=FEATURES_SCHEMA)
    return base, root, truth


def write_features(base, root) -> None:
    """Phase II for manifest rows that have no current feature row yet (what a run does)."""
    from exoray.engine.readers import read_features
    from exoray.engine.schemas import FEATURES_SCHEMA, IMAGE_KEY
    from exoray.engine.stages.features import FeatureWorker
    from exoray.image.manifest import read_manifest
    from exoray.storage import layout
    from exoray.storage.parts import list_parts, write_part
    from exoray.storage.store import Store

    store = Store(str(base))
    man = read_manifest(store)
    rows = man.filter(pc.equal(man["status"], "present"))
    if list_parts(store, layout.FEATURES):
        done = read_features(store, ["image_id", "fingerprint"])
        have = {(a, b) for a, b in zip(done["image_id"].to_pylist(),
                                        done["fingerprint"].to_pylist(), strict=True)}
        keep = [(a, b) not in have for a, b in zip(rows["image_id"].to_pylist(),
                                                    rows["fingerprint"].to_pylist(), strict=True)]
        rows = rows.filter(pa.array(keep))
    if rows.num_rows:
        feats = FeatureWorker(str(root), "run1")(rows.select(["image_id", "relpath",
                                                               "fingerprint"]))
        write_part(store, layout.FEATURES, feats.select(FEATURES_SCHEMA.names), run_id="run1",
                   key=IMAGE_KEY, schema=FEATURES_SCHEMA)


def truth_groups(truth: dict) -> set[frozenset[str]]:
    images = truth["images"]
    near: dict[int, set[str]] = {}
    for rel, t in images.items():
        if t["near_dup_group"] is not None:
            near.setdefault(t["near_dup_group"], set()).add(rel)
    exact = {frozenset({rel, t["exact_dup_of"]}) for rel, t in images.items() if t["exact_dup_of"]}
    return {frozenset(g) for g in near.values()} | exact


def relpath_groups(table: pa.Table) -> set[frozenset[str]]:
    out: dict[int, set[str]] = {}
    for rel, gid in zip(table["relpath"].to_pylist(), table["group_id"].to_pylist(), strict=True):
        out.setdefault(gid, set()).add(rel)
    return {frozenset(s) for s in out.values()}


def cli(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture, *argv: str):
    """Run `exoray ARGV` through the real main(); quality commands added if not wired yet."""
    import importlib

    from exoray.cli.quality import add_quality_commands

    main_mod = importlib.import_module("exoray.cli.main")
    original = main_mod.build_parser

    def build():
        parser = original()
        sub = next(a for a in parser._actions if a.dest == "command")
        if "issues" not in sub.choices:
            add_quality_commands(sub, [main_mod._common()])
        return parser

    monkeypatch.setattr(main_mod, "build_parser", build)
    capsys.readouterr()
    rc = main_mod.main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def test_run_groups_each_image_once_despite_duplicate_parts(tmp_path) -> None:
    from pipelines import dupes as pipeline

    base, _, truth = make_base(tmp_path, copies=2)  # every feature row is on disk twice
    summary = pipeline.run(base)
    table = pipeline.read_dupes(str(base))
    assert relpath_groups(table) == truth_groups(truth)
    assert summary["images_checked"] == len(truth["images"])
    ids = table["image_id"].to_pylist()
    assert len(ids) == len(set(ids))
    assert {"relpath", "fingerprint"} <= set(table.column_names)
    assert pipeline.dupes_info(table)["images_checked"] == len(truth["images"])


def test_run_ignores_vanished_images_and_needs_a_manifest(tmp_path) -> None:
    from pipelines import dupes as pipeline
    from pipelines import manifest

    base, root, truth = make_base(tmp_path)
    copy = next(rel for rel, t in truth["images"].items() if t["exact_dup_of"])
    (root / copy).unlink()
    manifest.run(base)  # marks it deleted; its feature row stays on disk
    pipeline.run(base)
    rels = set(pipeline.read_dupes(str(base))["relpath"].to_pylist())
    assert copy not in rels and truth["images"][copy]["exact_dup_of"] not in rels
    with pytest.raises(FileNotFoundError, match="exoray manifest"):
        pipeline.run(tmp_path / "empty_base")


def test_list_duplicates_keeps_the_best_member_and_drops_changes(tmp_path) -> None:
    from pipelines import dupes as pipeline
    from pipelines import manifest

    base, root, truth = make_base(tmp_path)
    with pytest.raises(FileNotFoundError, match="exoray dupes"):
        pipeline.list_duplicates(base)
    pipeline.run(base)
    found = pipeline.list_duplicates(base)
    table = found.table
    assert tuple(table.column_names) == pipeline.LIST_COLUMNS
    assert relpath_groups(table) == truth_groups(truth)
    assert found.notes == [] and found.groups == len(truth_groups(truth))
    assert found.redundant == table.num_rows - found.groups
    rows = table.to_pylist()
    for gid in {r["group_id"] for r in rows}:
        members = [r for r in rows if r["group_id"] == gid]
        keepers = [r for r in members if r["keep"]]
        assert len(keepers) == 1 and members[0] is keepers[0]  # keeper listed first
        best = max(r["width"] * r["height"] for r in members)
        assert keepers[0]["width"] * keepers[0]["height"] == best
        variants = {truth["images"][r["relpath"]]["variant"] for r in keepers}
        assert not variants & {"resized", "cropped"}
    # byte-identical copies: the original (shallower path), not the "copy_of_" one
    exact = [r for r in rows if r["kind"] == "exact"]
    assert [r["keep"] for r in exact if r["relpath"].split("/")[-1].startswith("copy_of_")] == [
        False]

    # A member vanishes (and another changes) after grouping: the list drops them and says so.
    near = [r for r in rows if r["kind"] == "near"]
    (root / near[1]["relpath"]).unlink()
    changed = root / near[2]["relpath"]
    changed.write_bytes(changed.read_bytes() + b"\0")
    manifest.run(base)
    write_features(base, root)
    again = pipeline.list_duplicates(base)
    rels = set(again.table["relpath"].to_pylist())
    assert near[1]["relpath"] not in rels and near[2]["relpath"] not in rels
    assert near[0]["relpath"] in rels
    assert any("vanished or changed" in n for n in again.notes)
    assert any("exoray dupes" in n for n in again.notes)


def test_cli_dupes_list_table_csv_json(tmp_path, monkeypatch, capsys) -> None:
    import csv
    import io
    import json

    base, _, truth = make_base(tmp_path)
    # no groups yet: --list groups first and says so on stderr
    rc, out, err = cli(monkeypatch, capsys, "dupes", str(base), "--list")
    assert rc == 0 and "grouping first" in err
    lines = out.splitlines()
    assert lines[0].split() == ["group", "kind", "keep", "image_id", "size", "bytes",
                                "sharpness", "relpath"]
    n_rows = sum(len(g) for g in truth_groups(truth))
    assert len(lines) == 1 + n_rows + 1 and "could go" in lines[-1]
    assert sum(" keep " in line for line in lines[1:-1]) == len(truth_groups(truth))

    rc, out, _ = cli(monkeypatch, capsys, "dupes", str(base), "--list", "--format", "csv")
    rows = list(csv.DictReader(io.StringIO(out)))
    assert rc == 0 and list(rows[0]) == ["group_id", "kind", "keep", "image_id", "relpath",
                                         "width", "height", "bytes", "sharpness"]
    assert relpath_groups(pa.table({"relpath": [r["relpath"] for r in rows],
                                    "group_id": [int(r["group_id"]) for r in rows]})) == \
        truth_groups(truth)

    rc, out, _ = cli(monkeypatch, capsys, "dupes", str(base), "--list", "--format", "json")
    data = json.loads(out)
    assert rc == 0 and len(data) == n_rows and all(isinstance(r["keep"], bool) for r in data)
    rc, out2, _ = cli(monkeypatch, capsys, "dupes", str(base), "--list", "--json")
    assert json.loads(out2) == data

    target = tmp_path / "groups.json"
    rc, out, _ = cli(monkeypatch, capsys, "dupes", str(base), "--list", "--output", str(target))
    assert rc == 0 and json.loads(target.read_text()) == data and "wrote json" in out

    rc, out, err = cli(monkeypatch, capsys, "dupes", str(base), "--format", "csv")
    assert rc == 2 and out == "" and len(err.strip().splitlines()) == 1 and "--list" in err
