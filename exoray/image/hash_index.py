"""Pair search over 64-bit perceptual hashes without an all-pairs loop, plus a vectorised union-find.

Two searches, both yielding verified index pairs in bounded slices:

* :func:`iter_near_pairs`: every pair within pHash Hamming distance ``d``, exactly, by multi-index
  hashing (pigeonhole). Split the 64 bits into ``m = d + 1 + s`` chunks; a pair within ``d``
  differs in at most ``d`` chunks, so it agrees exactly on at least ``s + 1`` of them, i.e. it
  shares the key ``hash & mask`` for at least one ``(s+1)``-subset of chunks. For each subset we
  sort by that key and verify only pairs inside equal-key runs, with a vectorised popcount.
  ``s = 0`` is the classic "d + 1 chunks, one must match" scheme; at a million images its 9-bit
  keys leave ~6e9 candidate pairs, so a cost model picks ``s`` (``s = 2`` at 1M images, d = 6).

* :func:`iter_joint_pairs`: pairs of (pHash, dHash) whose summed distance ``p + d`` is at most
  ``t`` (and ``p`` at most a cap), for the looser radius that crops need (``t`` ~ 22 of 128
  bits). Pigeonhole needs thousands of sorted tables at that radius, so candidates come from
  bit-sampling LSH instead: each of ``L`` tables keys every hash pair by ``k`` fixed, randomly
  chosen bits of the 127 informative ones (the pHash DC bit is always set). A pair at joint
  distance ``t`` shares a table's key with probability ``C(127 - t, k) / C(127, k)``; ``k`` and
  ``L`` come from a cost model that keeps the chance of missing a pair at the radius below
  1 % (closer pairs: far less). The tables come from a fixed seed, so the same hashes always
  give the same pairs.

Giant buckets (many distinct hashes sharing a key, e.g. near-blank images) are handled by
materialising at most ``pair_budget`` candidate pairs at a time and folding verified edges into a
union-find every ``pair_budget`` edges, so memory stays bounded; time inside such a bucket is
still quadratic in its size. Callers pass distinct values (identical hashes cost nothing then).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from itertools import combinations

import numpy as np

# Default number of candidate pairs (and of buffered edges) held in memory at once:
# ~4M pairs keeps the peak around a few hundred MB.
PAIR_BUDGET = 1 << 22
# Rough per-operation costs (ns) for the plans' cost models; only their ratio matters.
_SORT_NS_PER_ITEM = 30.0
_VERIFY_NS_PER_PAIR = 15.0
_KEY_NS_PER_ITEM = 20.0  # LSH: building one table's key (byte look-ups) per hash
_MAX_COMBOS = 1024
_SHORT_OFFSETS = 16  # run_pairs: pairs up to this far apart come from shifted comparisons

# Joint (pHash + dHash) LSH: 127 sampled bits (the pHash DC bit, bit 63, is always 1).
JOINT_POSITIONS = np.array([b for b in range(128) if b != 63], dtype=np.int64)
JOINT_MISS = 0.01  # chance of missing a pair at exactly the joint radius
_JOINT_MAX_TABLES = 1024
_JOINT_SEED = 20_240_611
_MAX_KEY_BITS = 32  # keys are packed above a 32-bit index into one uint64
_LITTLE_ENDIAN = np.little_endian


# --------------------------------------------------------------------------------------------
# union-find


class UnionFind:
    """Vectorised union-find over ``0..n-1``.

    Parents always point to a smaller index, so every root is its component's minimum and the
    structure has no cycles; unions are applied to whole edge arrays at once (numpy, no Python
    loop per edge), which is what makes a million nodes cheap.
    """

    def __init__(self, n: int) -> None:
        self.parent = np.arange(n, dtype=np.int64)

    def _compress(self) -> None:
        # Pointer jumping: depth halves each round, so log(depth) passes over the array.
        parent = self.parent
        while True:
            grand = parent[parent]
            if np.array_equal(grand, parent):
                return
            parent[:] = grand

    def union(self, a: np.ndarray, b: np.ndarray) -> None:
        """Join the components of ``a[k]`` and ``b[k]`` for every k."""
        a = np.asarray(a, dtype=np.int64)
        b = np.asarray(b, dtype=np.int64)
        keep = a != b
        a, b = a[keep], b[keep]
        while a.size:
            self._compress()
            ra, rb = self.parent[a], self.parent[b]
            keep = ra != rb
            if not keep.any():
                return
            ra, rb = ra[keep], rb[keep]
            hi, lo = np.maximum(ra, rb), np.minimum(ra, rb)
            # Several edges may hook the same root: the smallest wins now, the rest are
            # retried next round against the new roots (the number of roots strictly falls).
            np.minimum.at(self.parent, hi, lo)
            a, b = hi, lo

    def roots(self) -> np.ndarray:
        """Component label (its smallest member) for every node."""
        self._compress()
        return self.parent


def components(
    n: int, pairs: Iterable[tuple[np.ndarray, np.ndarray]], pair_budget: int = PAIR_BUDGET
) -> np.ndarray:
    """Component label per node of the graph on ``0..n-1`` with edges ``pairs`` (buffered)."""
    uf = UnionFind(n)
    buf_a: list[np.ndarray] = []
    buf_b: list[np.ndarray] = []
    buffered = 0
    for a, b in pairs:
        buf_a.append(a)
        buf_b.append(b)
        buffered += a.size
        if buffered >= pair_budget:
            uf.union(np.concatenate(buf_a), np.concatenate(buf_b))
            buf_a, buf_b, buffered = [], [], 0
    if buffered:
        uf.union(np.concatenate(buf_a), np.concatenate(buf_b))
    return uf.roots()


# --------------------------------------------------------------------------------------------
# shared pieces


def popcount64(x: np.ndarray) -> np.ndarray:
    if hasattr(np, "bitwise_count"):  # numpy >= 2.0
        return np.bitwise_count(x)
    table = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)
    return table[x.view(np.uint8)].reshape(-1, 8).sum(axis=1, dtype=np.uint8)


def ramp(counts: np.ndarray) -> np.ndarray:
    """Concatenation of ``arange(c)`` for every c in counts, without a Python loop."""
    total = int(counts.sum())
    if total == 0:
        return np.zeros(0, dtype=np.int64)
    starts = np.cumsum(counts) - counts
    return np.arange(total, dtype=np.int64) - np.repeat(starts, counts)


def run_pairs(sorted_keys: np.ndarray, pair_budget: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Every pair of positions ``(p, q)``, ``p < q``, inside a run of equal ``sorted_keys``,
    in slices of at most ``pair_budget`` pairs (one position alone may exceed it: <= n pairs).

    Pairs ``_SHORT_OFFSETS`` or fewer positions apart come from one vectorised comparison of the
    keys with themselves shifted per offset (cheap when most runs are short, as with random
    keys); only runs longer than that enumerate their remaining pairs explicitly.
    """
    n = sorted_keys.size
    if n < 2:
        return
    same = sorted_keys[1:] == sorted_keys[:-1]  # q and q + 1 share a run
    together = same
    for offset in range(1, _SHORT_OFFSETS + 1):
        if offset > 1:  # q .. q + offset share a run
            together = together[:-1] & same[offset - 1 :]
        first = np.flatnonzero(together)
        if first.size == 0:
            return
        for lo in range(0, first.size, pair_budget):
            part = first[lo : lo + pair_budget]
            yield part, part + offset
    brk = np.flatnonzero(~same) + 1
    starts = np.concatenate(([0], brk))
    ends = np.concatenate((brk, [n]))
    # Long runs: every position p pairs with p + _SHORT_OFFSETS + 1 .. end - 1.
    long = (ends - starts) > _SHORT_OFFSETS + 1
    starts, ends = starts[long], ends[long]
    reach = ends - starts - _SHORT_OFFSETS - 1  # positions in the run with pairs left
    pos = np.repeat(starts, reach) + ramp(reach)
    count = np.repeat(ends, reach) - pos - _SHORT_OFFSETS - 1
    cum = np.cumsum(count)
    lo = 0
    while lo < pos.size:
        base = cum[lo - 1] if lo else 0
        hi = int(np.searchsorted(cum, base + pair_budget, side="right"))
        hi = max(hi, lo + 1)
        p, c = pos[lo:hi], count[lo:hi]
        first = np.repeat(p, c)
        yield first, first + _SHORT_OFFSETS + 1 + ramp(c)
        lo = hi


# --------------------------------------------------------------------------------------------
# pHash radius: multi-index hashing


def chunk_bounds(n_chunks: int) -> list[tuple[int, int]]:
    """Split 64 bits into ``n_chunks`` contiguous chunks of near-equal width: (shift, width)."""
    widths = [64 // n_chunks + (1 if i < 64 % n_chunks else 0) for i in range(n_chunks)]
    return [(sum(widths[:i]), w) for i, w in enumerate(widths)]


def plan_extra_chunks(n: int, max_distance: int) -> int:
    """Choose ``s`` (chunks = max_distance + 1 + s, keys = s + 1 chunks) by a simple cost model.

    Cost = one sort per key subset + one popcount per candidate pair, assuming roughly uniform
    hash bits. Small inputs pick s = 0 (few sorts); large inputs pick longer keys.
    """
    best_s, best_cost = 0, math.inf
    pairs = n * (n - 1) / 2
    for s in range(0, 64 - max_distance):
        m = max_distance + 1 + s
        combos = math.comb(m, s + 1)
        if combos > _MAX_COMBOS and s > 0:
            break
        key_bits = 64 // m * (s + 1)  # narrowest key: the s+1 narrowest chunks
        cost = combos * n * _SORT_NS_PER_ITEM + combos * pairs / 2.0**key_bits * _VERIFY_NS_PER_PAIR
        if cost < best_cost:
            best_s, best_cost = s, cost
    return best_s


def iter_near_pairs(
    hashes: np.ndarray,
    max_distance: int,
    *,
    extra_chunks: int | None = None,
    pair_budget: int = PAIR_BUDGET,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield index pairs ``(i, j)`` with ``popcount(h[i] ^ h[j]) <= max_distance``, ``i != j``.

    Every such pair is yielded at least once (a pair sharing several keys may repeat); at most
    ``pair_budget`` candidate pairs are materialised per step. Repeated hashes work but each
    repeat is a pair: callers pass distinct values so identical hashes cost nothing.
    """
    h = np.ascontiguousarray(hashes, dtype=np.uint64)
    n = h.size
    if n < 2:
        return
    if max_distance == 0:
        key_sets: list[list[tuple[int, int]]] = [[(0, 64)]]
    else:
        s = plan_extra_chunks(n, max_distance) if extra_chunks is None else extra_chunks
        key_sets = [list(combo) for combo in combinations(chunk_bounds(max_distance + 1 + s), s + 1)]
    for chunks in key_sets:
        order, sorted_keys = _sort_by_key(h, chunks)
        hs = np.take(h, order)
        for first, second in run_pairs(sorted_keys, pair_budget):
            ok = popcount64(np.take(hs, first) ^ np.take(hs, second)) <= max_distance
            if ok.any():
                yield order[first[ok]], order[second[ok]]


def _sort_by_key(h: np.ndarray, chunks: list[tuple[int, int]]) -> tuple[np.ndarray, np.ndarray]:
    """``(order, sorted keys)`` for the key made of the bit ranges ``chunks`` (shift, width)."""
    if sum(width for _, width in chunks) > _MAX_KEY_BITS:
        mask = 0
        for shift, width in chunks:
            mask |= ((1 << width) - 1) << shift
        keys = h & np.uint64(mask)
        order = np.argsort(keys)
        return order, keys[order]
    keys = np.zeros(h.size, dtype=np.uint64)
    at = 0
    for shift, width in chunks:
        keys |= ((h >> np.uint64(shift)) & np.uint64((1 << width) - 1)) << np.uint64(at)
        at += width
    return sort_small_keys(keys)


def sort_small_keys(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(order, sorted keys)`` for keys below 2**32 (uint64 or uint32).

    Each key is packed above its index in one uint64 and the packed values sorted in place: a
    plain sort, several times faster than an argsort.
    """
    n = keys.size
    if n >= 1 << 32:
        order = np.argsort(keys, kind="stable")
        return order, keys[order]
    packed = keys.astype(np.uint64)
    packed <<= np.uint64(32)
    packed |= np.arange(n, dtype=np.uint64)
    packed.sort()
    halves = packed.view(np.uint32)  # (low, high) = (index, key) on little-endian machines
    low, high = (0, 1) if _LITTLE_ENDIAN else (1, 0)
    return halves[low::2].astype(np.int64), np.ascontiguousarray(halves[high::2])


def near_components(
    hashes: np.ndarray,
    max_distance: int,
    *,
    extra_chunks: int | None = None,
    pair_budget: int = PAIR_BUDGET,
) -> np.ndarray:
    """Component label per (unique) hash under 'Hamming distance <= max_distance' links."""
    pairs = iter_near_pairs(hashes, max_distance, extra_chunks=extra_chunks,
                            pair_budget=pair_budget)
    return components(hashes.size, pairs, pair_budget)


# --------------------------------------------------------------------------------------------
# joint pHash + dHash radius: bit-sampling LSH


def joint_hit_probability(key_bits: int, distance: int) -> float:
    """Chance that one table's key is equal for a pair at joint distance ``distance``."""
    usable = JOINT_POSITIONS.size
    if distance > usable - key_bits:
        return 0.0
    return math.comb(usable - distance, key_bits) / math.comb(usable, key_bits)


def plan_joint(n: int, max_joint: int, miss: float = JOINT_MISS) -> tuple[int, int]:
    """``(key_bits, tables)`` for ``n`` hash pairs: the cheapest plan (a key and a sort per
    table, a popcount per candidate pair, assuming roughly uniform bits) that misses a pair at
    joint distance ``max_joint`` with probability at most ``miss``."""
    best, best_cost = (_MAX_KEY_BITS, 1), math.inf
    pairs = n * (n - 1) / 2
    for k in range(1, _MAX_KEY_BITS + 1):
        hit = joint_hit_probability(k, max_joint)
        if hit <= 0.0:
            break
        tables = 1 if hit >= 1.0 else math.ceil(math.log(miss) / math.log1p(-hit))
        if tables > _JOINT_MAX_TABLES:
            continue
        per_table = n * (_KEY_NS_PER_ITEM + _SORT_NS_PER_ITEM) + pairs / 2.0**k * _VERIFY_NS_PER_PAIR
        if tables * per_table < best_cost:
            best, best_cost = (k, tables), tables * per_table
    return best


def joint_tables(key_bits: int, tables: int) -> list[np.ndarray]:
    """The fixed (seeded) bit positions of every table: 0..63 pHash bits, 64..127 dHash bits."""
    rng = np.random.default_rng(_JOINT_SEED)
    return [np.sort(rng.choice(JOINT_POSITIONS, size=key_bits, replace=False))
            for _ in range(tables)]


def _word_columns(phashes: np.ndarray, dhashes: np.ndarray) -> list[np.ndarray]:
    """The eight 16-bit words of every (pHash, dHash) pair, one uint16 column each (0-3 pHash)."""
    return [((word >> np.uint64(16 * w)) & np.uint64(0xFFFF)).astype(np.uint16)
            for word in (phashes, dhashes) for w in range(4)]


def _table_keys(columns: list[np.ndarray], positions: np.ndarray) -> np.ndarray:
    """Key bit j = source bit ``positions[j]``, built from one 65536-entry look-up per word."""
    values = np.arange(256, dtype=np.uint32)
    byte_luts: dict[int, np.ndarray] = {}
    for j, pos in enumerate(positions.tolist()):
        byte, offset = divmod(pos, 8)
        lut = byte_luts.setdefault(byte, np.zeros(256, dtype=np.uint32))
        lut |= ((values >> np.uint32(offset)) & np.uint32(1)) << np.uint32(j)
    words = np.arange(1 << 16, dtype=np.int64)
    zero = np.zeros(256, dtype=np.uint32)
    keys = np.zeros(columns[0].size, dtype=np.uint32)
    for w in sorted({byte // 2 for byte in byte_luts}):
        lo, hi = byte_luts.get(2 * w, zero), byte_luts.get(2 * w + 1, zero)
        word_lut = np.take(lo, words & 0xFF) | np.take(hi, words >> 8)
        keys |= np.take(word_lut, columns[w])
    return keys


def iter_joint_pairs(
    phashes: np.ndarray,
    dhashes: np.ndarray,
    max_joint: int,
    max_phash: int,
    *,
    plan: tuple[int, int] | None = None,
    pair_budget: int = PAIR_BUDGET,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield index pairs with pHash distance ``<= max_phash`` and pHash + dHash distance
    ``<= max_joint``, candidates from the LSH tables of ``plan`` (default :func:`plan_joint`).

    Only verified pairs are yielded (a pair sharing several tables' keys may repeat); each pair
    within the radius is found with probability ``>= 1 - JOINT_MISS``. Callers pass distinct
    (pHash, dHash) pairs.
    """
    p = np.ascontiguousarray(phashes, dtype=np.uint64)
    d = np.ascontiguousarray(dhashes, dtype=np.uint64)
    n = p.size
    if n < 2:
        return
    key_bits, tables = plan_joint(n, max_joint) if plan is None else plan
    columns = _word_columns(p, d)
    for positions in joint_tables(key_bits, tables):
        order, sorted_keys = sort_small_keys(_table_keys(columns, positions))
        ps = np.take(p, order)  # candidates are near each other in this order
        for first, second in run_pairs(sorted_keys, pair_budget):
            dp = popcount64(np.take(ps, first) ^ np.take(ps, second))
            close = np.flatnonzero(dp <= max_phash)  # rejects nearly all at once
            if close.size == 0:
                continue
            a, b = order[first[close]], order[second[close]]
            ok = dp[close] + popcount64(d[a] ^ d[b]) <= max_joint
            if ok.any():
                yield a[ok], b[ok]


def joint_components(
    phashes: np.ndarray,
    dhashes: np.ndarray,
    max_joint: int,
    max_phash: int,
    *,
    plan: tuple[int, int] | None = None,
    pair_budget: int = PAIR_BUDGET,
) -> np.ndarray:
    """Component label per (unique) hash pair under :func:`iter_joint_pairs` links."""
    pairs = iter_joint_pairs(phashes, dhashes, max_joint, max_phash, plan=plan,
                             pair_budget=pair_budget)
    return components(np.asarray(phashes).size, pairs, pair_budget)
