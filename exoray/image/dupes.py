"""Duplicate grouping: exact copies, perceptual-hash near copies and embedding near copies.

Pure functions on arrays; the caller reads hashes/embeddings from storage and writes the result.
Every finder returns the same table shape, so results from different evidence can be merged:

    image_id: string   group_id: int64   kind: string ('exact' | 'near' | 'embedding')

Only images in a group of two or more appear. Rows are sorted by (group_id, image_id) and
group ids are numbered 0.. in the order of each group's smallest image_id, so the same input
always gives the same table, whatever the input order.

Near-duplicate search on 64-bit perceptual hashes uses multi-index hashing (pigeonhole), not an
all-pairs loop. Split the 64 bits into ``m = d + 1 + s`` chunks; a pair within Hamming distance
``d`` differs in at most ``d`` chunks, so it agrees exactly on at least ``s + 1`` of them, i.e. it
shares the key ``hash & mask`` for at least one ``(s+1)``-subset of chunks. For each subset we
sort by that key and verify only pairs inside equal-key runs, with a vectorised popcount.
``s = 0`` is the classic "max_distance + 1 chunks, one must match" scheme; at a million images
its 9-bit keys leave ~6e9 candidate pairs, so a cost model picks ``s`` (more, longer keys: more
sorts but far fewer candidates; ``s = 2`` at 1M images, d = 6).

Giant buckets (many distinct hashes sharing a key, e.g. near-blank images) are handled by
materialising at most ``pair_budget`` candidate pairs at a time and folding verified edges into a
union-find every ``pair_budget`` edges, so memory stays bounded; time inside such a bucket is
still quadratic in its size. Identical hashes (the usual blank-image case) are collapsed to one
node before the search, so they cost nothing.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from itertools import combinations
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

__all__ = [
    "KINDS",
    "find_embedding_duplicates",
    "find_hash_duplicates",
    "merge_duplicate_tables",
    "summarize_duplicates",
]

# Strongest evidence first; merging keeps the strongest kind per image.
KINDS: tuple[str, ...] = ("exact", "near", "embedding")
_STRENGTH = {"embedding": 1, "near": 2, "exact": 3}
_CODE_NAMES = pa.array(["", "embedding", "near", "exact"], type=pa.string())

SCHEMA = pa.schema(
    [
        pa.field("image_id", pa.string(), nullable=False),
        pa.field("group_id", pa.int64(), nullable=False),
        pa.field("kind", pa.string(), nullable=False),
    ]
)

_PHASH_HEX_CHARS = 16
# Default number of candidate pairs (and of buffered edges) held in memory at once:
# ~4M pairs keeps the peak around a few hundred MB.
_PAIR_BUDGET = 1 << 22
# Rough per-operation costs (ns) for the plan's cost model; only their ratio matters.
_SORT_NS_PER_ITEM = 30.0
_VERIFY_NS_PER_PAIR = 15.0
_MAX_COMBOS = 1024
_EMBED_QUERY_BATCH = 4096

_HEX_LUT = np.full(256, 255, dtype=np.uint8)
for _i, _c in enumerate(b"0123456789abcdef"):
    _HEX_LUT[_c] = _i
for _i, _c in enumerate(b"ABCDEF"):
    _HEX_LUT[_c] = 10 + _i
del _i, _c


# --------------------------------------------------------------------------------------------
# union-find


class _UnionFind:
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


# --------------------------------------------------------------------------------------------
# input handling


def _to_string_array(values: Any, name: str) -> pa.Array:
    """Accept lists, numpy arrays and (chunked) Arrow arrays; return one Arrow string array."""
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    if isinstance(values, pa.Array):
        t = values.type
        if not (pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_null(t)):
            raise TypeError(f"{name} must hold strings, got Arrow type {t}")
        return values.cast(pa.string())
    if isinstance(values, (str, bytes)):
        raise TypeError(
            f"{name} must be a sequence of strings, not a single {type(values).__name__}"
        )
    try:
        return pa.array(values, type=pa.string())
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError) as exc:
        raise TypeError(f"{name} must be a sequence of str or None: {exc}") from exc


def _check_image_ids(image_ids: Any) -> pa.Array:
    """Image ids must be present and unique: they are the rows of the output."""
    ids = _to_string_array(image_ids, "image_ids")
    if ids.null_count:
        first = int(np.flatnonzero(ids.is_null().to_numpy(zero_copy_only=False))[0])
        raise ValueError(f"image_ids has {ids.null_count} null value(s), first at position {first}")
    if len(ids) > 1:
        sorted_ids = ids.take(pc.sort_indices(ids))
        same = pc.equal(sorted_ids[1:], sorted_ids[:-1]).to_numpy(zero_copy_only=False)
        if same.any():
            dup = sorted_ids[int(np.flatnonzero(same)[0])].as_py()
            raise ValueError(f"image_ids must be unique; {dup!r} appears more than once")
    return ids


def _present(values: pa.Array) -> np.ndarray:
    """Boolean mask of non-null, non-empty strings (missing hashes are skipped, not errors)."""
    if len(values) == 0:
        return np.zeros(0, dtype=bool)
    mask = pc.and_(pc.is_valid(values), pc.greater(pc.binary_length(values), 0))
    return mask.fill_null(False).to_numpy(zero_copy_only=False)


def _bad_values_error(
    what: str, ids: pa.Array, values: pa.Array, bad_pos: np.ndarray
) -> ValueError:
    shown = ", ".join(
        f"image_id {ids[int(p)].as_py()!r}: {values[int(p)].as_py()!r}" for p in bad_pos[:5]
    )
    more = f" (and {len(bad_pos) - 5} more)" if len(bad_pos) > 5 else ""
    return ValueError(f"{len(bad_pos)} invalid {what}: {shown}{more}")


def _parse_phashes(ids: pa.Array, phashes: pa.Array, positions: np.ndarray) -> np.ndarray:
    """Parse 16-hex-char strings at ``positions`` to uint64, vectorised over the Arrow buffer."""
    if positions.size == 0:
        return np.zeros(0, dtype=np.uint64)
    sub = phashes.take(pa.array(positions))
    lengths = pc.binary_length(sub).to_numpy(zero_copy_only=False)
    bad = lengths != _PHASH_HEX_CHARS
    if bad.any():
        raise _bad_values_error(
            "phash value(s) (expected 16 hex characters)", ids, phashes, positions[bad]
        )
    # Every value is exactly 16 bytes and Arrow stores them back to back: read them as a matrix.
    offsets = np.frombuffer(
        sub.buffers()[1], dtype=np.int32, count=len(sub) + 1, offset=4 * sub.offset
    )
    data = np.frombuffer(sub.buffers()[2], dtype=np.uint8)
    raw = data[offsets[0] : offsets[0] + _PHASH_HEX_CHARS * len(sub)].reshape(-1, _PHASH_HEX_CHARS)
    nibbles = _HEX_LUT[raw]
    bad = (nibbles == 255).any(axis=1)
    if bad.any():
        raise _bad_values_error(
            "phash value(s) (expected 16 hex characters)", ids, phashes, positions[bad]
        )
    out = np.zeros(len(sub), dtype=np.uint64)
    for k in range(_PHASH_HEX_CHARS):
        out = (out << np.uint64(4)) | nibbles[:, k].astype(np.uint64)
    return out


# --------------------------------------------------------------------------------------------
# output


def _empty_table() -> pa.Table:
    return SCHEMA.empty_table()


def _groups_table(ids: pa.Array, roots: np.ndarray, kind_code: np.ndarray) -> pa.Table:
    """Turn per-node component labels into the output table (groups of >= 2, stable ids)."""
    n = len(ids)
    if n == 0:
        return _empty_table()
    sizes = np.bincount(roots, minlength=n)
    member = np.flatnonzero(sizes[roots] >= 2)
    if member.size == 0:
        return _empty_table()
    member_ids = ids.take(pa.array(member))
    rank = np.empty(member.size, dtype=np.int64)
    rank[pc.sort_indices(member_ids).to_numpy()] = np.arange(member.size)
    r = roots[member]
    min_rank = np.full(n, member.size, dtype=np.int64)
    np.minimum.at(min_rank, r, rank)
    group_key = min_rank[r]
    order = np.lexsort((rank, group_key))
    key_sorted = group_key[order]
    group_id = np.zeros(member.size, dtype=np.int64)
    np.cumsum(key_sorted[1:] != key_sorted[:-1], out=group_id[1:])
    rows = member[order]
    return pa.table(
        {
            "image_id": member_ids.take(pa.array(order)),
            "group_id": pa.array(group_id, type=pa.int64()),
            "kind": _CODE_NAMES.take(pa.array(kind_code[rows].astype(np.int64))),
        },
        schema=SCHEMA,
    )


# --------------------------------------------------------------------------------------------
# perceptual-hash near duplicates: multi-index hashing


def _chunk_masks(n_chunks: int) -> list[int]:
    """Split 64 bits into ``n_chunks`` contiguous chunks of near-equal width; one mask each."""
    widths = [64 // n_chunks + (1 if i < 64 % n_chunks else 0) for i in range(n_chunks)]
    masks, shift = [], 0
    for w in widths:
        masks.append(((1 << w) - 1) << shift)
        shift += w
    return masks


def _plan_extra_chunks(n: int, max_distance: int) -> int:
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


def _iter_near_pairs(
    hashes: np.ndarray,
    max_distance: int,
    *,
    extra_chunks: int | None = None,
    pair_budget: int = _PAIR_BUDGET,
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
        key_sets: list[int] = [(1 << 64) - 1]
    else:
        s = _plan_extra_chunks(n, max_distance) if extra_chunks is None else extra_chunks
        chunk_masks = _chunk_masks(max_distance + 1 + s)
        key_sets = []
        for combo in combinations(range(len(chunk_masks)), s + 1):
            mask = 0
            for c in combo:
                mask |= chunk_masks[c]
            key_sets.append(mask)
    for mask in key_sets:
        keys = h & np.uint64(mask)
        order = np.argsort(keys)
        keys = keys[order]
        brk = np.flatnonzero(keys[1:] != keys[:-1]) + 1
        starts = np.concatenate(([0], brk))
        ends = np.concatenate((brk, [n]))
        multi = (ends - starts) >= 2
        if not multi.any():
            continue
        starts, ends = starts[multi], ends[multi]
        hs = h[order]
        # Every position p in a run [start, end) pairs with p+1 .. end-1.
        run_len = ends - starts
        pos = np.repeat(starts, run_len - 1) + _ramp(run_len - 1)
        count = np.repeat(ends, run_len - 1) - 1 - pos
        cum = np.cumsum(count)
        lo = 0
        while lo < pos.size:
            base = cum[lo - 1] if lo else 0
            hi = int(np.searchsorted(cum, base + pair_budget, side="right"))
            hi = max(hi, lo + 1)  # one position alone may exceed the budget (<= n pairs)
            p, c = pos[lo:hi], count[lo:hi]
            first = np.repeat(p, c)
            second = first + 1 + _ramp(c)
            dist = _popcount64(hs[first] ^ hs[second])
            ok = dist <= max_distance
            if ok.any():
                yield order[first[ok]], order[second[ok]]
            lo = hi


def _ramp(counts: np.ndarray) -> np.ndarray:
    """Concatenation of ``arange(c)`` for every c in counts, without a Python loop."""
    total = int(counts.sum())
    if total == 0:
        return np.zeros(0, dtype=np.int64)
    starts = np.cumsum(counts) - counts
    return np.arange(total, dtype=np.int64) - np.repeat(starts, counts)


def _popcount64(x: np.ndarray) -> np.ndarray:
    if hasattr(np, "bitwise_count"):  # numpy >= 2.0
        return np.bitwise_count(x)
    table = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)
    return table[x.view(np.uint8)].reshape(-1, 8).sum(axis=1, dtype=np.uint8)


def _near_components(
    hashes: np.ndarray,
    max_distance: int,
    *,
    extra_chunks: int | None = None,
    pair_budget: int = _PAIR_BUDGET,
) -> np.ndarray:
    """Component label per (unique) hash under 'Hamming distance <= max_distance' links."""
    uf = _UnionFind(hashes.size)
    buf_a: list[np.ndarray] = []
    buf_b: list[np.ndarray] = []
    buffered = 0
    for a, b in _iter_near_pairs(
        hashes, max_distance, extra_chunks=extra_chunks, pair_budget=pair_budget
    ):
        buf_a.append(a)
        buf_b.append(b)
        buffered += a.size
        if buffered >= pair_budget:
            uf.union(np.concatenate(buf_a), np.concatenate(buf_b))
            buf_a, buf_b, buffered = [], [], 0
    if buffered:
        uf.union(np.concatenate(buf_a), np.concatenate(buf_b))
    return uf.roots()


def _check_max_distance(max_distance: Any) -> int:
    if isinstance(max_distance, bool) or not isinstance(max_distance, (int, np.integer)):
        raise TypeError(f"max_distance must be an int, got {type(max_distance).__name__}")
    if not 0 <= int(max_distance) <= 63:
        raise ValueError(f"max_distance must be between 0 and 63 bits, got {max_distance}")
    return int(max_distance)


def find_hash_duplicates(
    image_ids: Sequence[str],
    content_hashes: Sequence[str | None],
    phashes: Sequence[str | None],
    *,
    max_distance: int = 6,
) -> pa.Table:
    """Group images that are byte-identical ('exact') or perceptually close ('near').

    Exact: identical non-empty ``content_hashes``. Near: connected components of pairs whose
    64-bit ``phashes`` (16 hex characters) differ in at most ``max_distance`` bits, found by
    multi-index hashing (see the module docstring) on the distinct phash values, so exact copies
    and identical phashes are searched once. A group joined both ways is one group; its rows are
    'exact' where the image's content hash is shared with another image, otherwise 'near'.
    Null or empty hashes are skipped; a malformed phash raises ``ValueError`` naming the image.
    """
    max_distance = _check_max_distance(max_distance)
    ids = _check_image_ids(image_ids)
    content = _to_string_array(content_hashes, "content_hashes")
    ph = _to_string_array(phashes, "phashes")
    n = len(ids)
    if len(content) != n or len(ph) != n:
        raise ValueError(
            f"image_ids, content_hashes and phashes must have the same length, "
            f"got {n}, {len(content)}, {len(ph)}"
        )
    if n == 0:
        return _empty_table()

    uf = _UnionFind(n)
    kind = np.zeros(n, dtype=np.int8)

    # Exact groups: identical content hash.
    has_content = np.flatnonzero(_present(content))
    if has_content.size:
        codes = (
            pc.dictionary_encode(content.take(pa.array(has_content))).indices.to_numpy()
        ).astype(np.int64)
        n_codes = int(codes.max()) + 1
        first = np.full(n_codes, n, dtype=np.int64)
        np.minimum.at(first, codes, has_content)
        uf.union(has_content, first[codes])
        shared = np.bincount(codes, minlength=n_codes)[codes] >= 2
        kind[has_content[shared]] = _STRENGTH["exact"]

    # Near groups: search distinct phash values only, then link every image to its value's
    # component (identical phashes join through that too).
    has_phash = np.flatnonzero(_present(ph))
    if has_phash.size:
        values = _parse_phashes(ids, ph, has_phash)
        uniq, first_pos, inverse = np.unique(values, return_index=True, return_inverse=True)
        roots = _near_components(uniq, max_distance)
        rep_image = has_phash[first_pos]  # one image per distinct phash value
        uf.union(has_phash, rep_image[roots[inverse.ravel()]])

    roots = uf.roots()
    kind[kind == 0] = _STRENGTH["near"]
    return _groups_table(ids, roots, kind)


# --------------------------------------------------------------------------------------------
# embedding near duplicates


def _identical_rows(vectors: np.ndarray) -> np.ndarray:
    """Index of the first identical row for every row, so exact repeats are searched once."""
    n = vectors.shape[0]
    digests = np.fromiter((hash(row.tobytes()) for row in vectors), dtype=np.int64, count=n)
    _, first, inverse = np.unique(digests, return_index=True, return_inverse=True)
    rep = first[inverse.ravel()]
    # A digest collision between different rows is astronomically rare; still, only merge rows
    # that really are equal (checked in slices to bound memory).
    for lo in range(0, n, 65536):
        sl = slice(lo, lo + 65536)
        differs = ~(vectors[sl] == vectors[rep[sl]]).all(axis=1)
        if differs.any():
            idx = np.flatnonzero(differs) + lo
            rep[idx] = idx
    return rep


def find_embedding_duplicates(
    image_ids: Sequence[str],
    vectors: np.ndarray,
    *,
    threshold: float = 0.95,
) -> pa.Table:
    """Group images whose embeddings have cosine similarity >= ``threshold`` (kind 'embedding').

    ``vectors`` are float32 rows, L2-normalised (checked), so inner product is cosine. Pairs come
    from faiss range search on an exact inner-product index, queried in batches; identical rows
    are collapsed first so a pile of blank images cannot make one query return millions of
    hits. Pairs are joined transitively (union-find).
    """
    ids = _check_image_ids(image_ids)
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float, np.floating)):
        raise TypeError(f"threshold must be a float, got {type(threshold).__name__}")
    if not -1.0 <= float(threshold) <= 1.0:
        raise ValueError(f"threshold is a cosine similarity in [-1, 1], got {threshold}")
    vec = np.asarray(vectors)
    if vec.ndim != 2:
        raise ValueError(f"vectors must be a 2-D array (images x dims), got shape {vec.shape}")
    if vec.shape[0] != len(ids):
        raise ValueError(f"vectors has {vec.shape[0]} rows but there are {len(ids)} image_ids")
    if not np.issubdtype(vec.dtype, np.floating):
        raise TypeError(f"vectors must be floating point, got dtype {vec.dtype}")
    n = vec.shape[0]
    if n == 0:
        return _empty_table()
    if vec.shape[1] == 0:
        raise ValueError("vectors has zero dimensions")
    vec = np.ascontiguousarray(vec, dtype=np.float32)
    finite = np.isfinite(vec).all(axis=1)
    if not finite.all():
        bad = np.flatnonzero(~finite)
        raise ValueError(
            f"{bad.size} vector(s) contain NaN or inf, first for image_id {ids[int(bad[0])].as_py()!r}"
        )
    norms = np.linalg.norm(vec, axis=1)
    off = np.abs(norms - 1.0) > 1e-3
    if off.any():
        bad = np.flatnonzero(off)
        raise ValueError(
            f"vectors must be L2-normalised; {bad.size} row(s) are not, first for image_id "
            f"{ids[int(bad[0])].as_py()!r} (norm {norms[bad[0]]:.4f})"
        )

    try:
        import faiss
    except ImportError as exc:
        raise ImportError(
            "find_embedding_duplicates needs faiss: pip install 'exoray[index]'"
        ) from exc

    uf = _UnionFind(n)
    rep = _identical_rows(vec)
    uf.union(np.arange(n), rep)
    uniq = np.flatnonzero(rep == np.arange(n))
    uvec = vec[uniq]
    thr = np.float32(threshold)
    # faiss keeps inner products strictly above the radius; step just below to keep '>='.
    radius = float(np.nextafter(thr, np.float32(-np.inf)))
    index = faiss.IndexFlatIP(uvec.shape[1])
    index.add(uvec)
    for lo in range(0, uniq.size, _EMBED_QUERY_BATCH):
        lims, sims, hits = index.range_search(uvec[lo : lo + _EMBED_QUERY_BATCH], radius)
        query = lo + np.repeat(np.arange(lims.size - 1), np.diff(lims).astype(np.int64))
        keep = (hits > query) & (sims >= thr)
        if keep.any():
            uf.union(uniq[query[keep]], uniq[hits[keep]])
    roots = uf.roots()
    kind = np.full(n, _STRENGTH["embedding"], dtype=np.int8)
    return _groups_table(ids, roots, kind)


# --------------------------------------------------------------------------------------------
# merging and summary


def _check_table(table: Any, position: int) -> pa.Table:
    if not isinstance(table, pa.Table):
        raise TypeError(f"table {position} must be a pyarrow.Table, got {type(table).__name__}")
    missing = [c for c in SCHEMA.names if c not in table.column_names]
    if missing:
        raise ValueError(f"table {position} lacks column(s) {missing}; expected {SCHEMA.names}")
    columns = {}
    for field in SCHEMA:
        column = table.column(field.name)
        if column.null_count:
            raise ValueError(f"table {position} has nulls in column {field.name!r}")
        try:
            columns[field.name] = column.cast(field.type)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
            raise ValueError(
                f"table {position} column {field.name!r} is {column.type}, expected {field.type}"
            ) from exc
    table = pa.table(columns, schema=SCHEMA)
    kinds = set(pc.unique(table.column("kind")).to_pylist())
    unknown = kinds - set(KINDS)
    if unknown:
        raise ValueError(
            f"table {position} has unknown kind(s) {sorted(unknown)}; valid: {list(KINDS)}"
        )
    return table


def merge_duplicate_tables(*tables: pa.Table) -> pa.Table:
    """Join several duplicate tables into one grouping.

    Groups that share an image become one group (union-find over all groups), so an image
    linked by a hash and by an embedding lands in a single group. Each image keeps its strongest
    kind: exact > near > embedding.
    """
    checked = [_check_table(t, i) for i, t in enumerate(tables)]
    checked = [t for t in checked if t.num_rows]
    if not checked:
        return _empty_table()
    all_ids = pa.concat_arrays([t.column("image_id").combine_chunks() for t in checked])
    encoded = pc.dictionary_encode(all_ids)
    node = encoded.indices.to_numpy().astype(np.int64)
    ids = encoded.dictionary
    # One key per (table, group): groups are only meaningful within their own table.
    group_parts, offset = [], 0
    for t in checked:
        gid = t.column("group_id").to_numpy().astype(np.int64)
        dense = np.unique(gid, return_inverse=True)[1].ravel()
        group_parts.append(dense + offset)
        offset += int(dense.max()) + 1
    group = np.concatenate(group_parts)
    strength = np.concatenate(
        [
            pc.index_in(t.column("kind"), value_set=_CODE_NAMES).to_numpy().astype(np.int8)
            for t in checked
        ]
    )
    first = np.full(offset, len(ids), dtype=np.int64)
    np.minimum.at(first, group, node)
    uf = _UnionFind(len(ids))
    uf.union(node, first[group])
    kind = np.zeros(len(ids), dtype=np.int8)
    np.maximum.at(kind, node, strength)
    return _groups_table(ids, uf.roots(), kind)


def summarize_duplicates(table: pa.Table, *, top: int = 10) -> dict[str, Any]:
    """Headline numbers for a duplicate table.

    ``groups_by_kind`` counts groups holding at least one row of that kind (a group mixing exact
    and near rows counts under both); ``redundant_images`` is how many files could go if one
    image per group were kept.
    """
    table = _check_table(table, 0)
    if isinstance(top, bool) or not isinstance(top, int) or top < 0:
        raise ValueError(f"top must be a non-negative int, got {top!r}")
    gid = table.column("group_id").to_numpy().astype(np.int64)
    kinds = table.column("kind").to_numpy()
    groups, sizes = np.unique(gid, return_counts=True)
    by_size = np.lexsort((groups, -sizes))[:top]
    return {
        "groups": int(groups.size),
        "images_in_groups": int(gid.size),
        "redundant_images": int(gid.size - groups.size),
        "groups_by_kind": {k: int(np.unique(gid[kinds == k]).size) for k in KINDS},
        "images_by_kind": {k: int((kinds == k).sum()) for k in KINDS},
        "largest_groups": [{"group_id": int(groups[i]), "size": int(sizes[i])} for i in by_size],
    }
