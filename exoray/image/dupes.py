"""Duplicate grouping: exact copies, perceptual-hash near copies and embedding near copies.

Pure functions on arrays; the caller reads hashes/embeddings from storage and writes the result.
Every finder returns the same table shape, so results from different evidence can be merged:

    image_id: string   group_id: int64   kind: string ('exact' | 'near' | 'embedding')

Only images in a group of two or more appear. Rows are sorted by (group_id, image_id) and
group ids are numbered 0.. in the order of each group's smallest image_id, so the same input
always gives the same table, whatever the input order.

Near copies are linked by two rules, both searched without an all-pairs loop (see
:mod:`exoray.image.hash_index`):

* pHash Hamming distance ``<= max_distance`` (default 6), exactly, by multi-index hashing. This
  catches resized, recompressed and brightened copies.
* with ``dhashes``: pHash distance ``<= 16`` and pHash + dHash distance ``<= max_joint_distance``
  (default 22 of 128 bits). A crop of 2.5 % per side shifts and rescales the picture, which moves
  pHash's DCT signs by 8-20 bits, but dHash's neighbour gradients by only 0-13; the sum separates
  crops from unrelated photos where neither hash alone can (real photos with resized,
  recompressed, brightened and 2.5 %/5 % cropped copies, ``benchmarks/bench_dupes_recall.py``:
  pair recall 0.67 -> 0.95 at precision 0.998; without the 5 % crops 0.84 -> 0.98). Only
  images whose dHash has 8..56 set bits take part: a smooth sky or a blank page has a near-empty
  dHash that matches every other smooth picture. Candidates come from bit-sampling LSH tables, so
  a pair exactly at the radius is missed with probability < 1 % (closer pairs: far less).

Identical hashes (the usual blank-image case) are collapsed to one node before each search, so
they cost nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from exoray.image.dupe_tables import (
    KINDS,
    SCHEMA,
    STRENGTH,
    check_image_ids,
    empty_table,
    groups_table,
    merge_duplicate_tables,
    parse_hashes,
    present,
    summarize_duplicates,
    to_string_array,
)
from exoray.image.hash_index import (
    PAIR_BUDGET,
    UnionFind,
    iter_near_pairs,
    joint_components,
    near_components,
    plan_extra_chunks,
    popcount64,
)

__all__ = [
    "KINDS",
    "SCHEMA",
    "find_embedding_duplicates",
    "find_hash_duplicates",
    "merge_duplicate_tables",
    "summarize_duplicates",
]

# Older names of the search internals (tests and benchmarks use them).
_UnionFind = UnionFind
_PAIR_BUDGET = PAIR_BUDGET
_iter_near_pairs = iter_near_pairs
_near_components = near_components
_plan_extra_chunks = plan_extra_chunks

# Joint pHash + dHash rule (with dhashes): default radius over the 128 bits, the cap on the pHash
# part, and the dHash set-bit range of images that take part (see the module docstring).
DEFAULT_MAX_JOINT_DISTANCE = 22
JOINT_MAX_PHASH = 16
DHASH_MIN_BITS = 8
_EMBED_QUERY_BATCH = 4096


# --------------------------------------------------------------------------------------------
# perceptual-hash near duplicates


def _check_bits(value: Any, name: str, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if not 0 <= int(value) <= high:
        raise ValueError(f"{name} must be between 0 and {high} bits, got {value}")
    return int(value)


def _link_joint(
    uf: UnionFind,
    ids: pa.Array,
    phash_values: np.ndarray,
    has_phash: np.ndarray,
    dh: pa.Array,
    max_joint_distance: int,
) -> None:
    """Union images linked by the joint pHash + dHash rule (module docstring);
    ``phash_values[k]`` is the parsed pHash of image ``has_phash[k]``."""
    has_dhash = np.flatnonzero(present(dh))
    dvalues = parse_hashes(ids, dh, has_dhash, "dhash")  # every dhash given must be valid
    bits = popcount64(dvalues)
    informative = (bits >= DHASH_MIN_BITS) & (bits <= 64 - DHASH_MIN_BITS)
    both = np.isin(has_dhash, has_phash, assume_unique=True)
    keep = informative & both
    rows = has_dhash[keep]
    if rows.size < 2:
        return
    pvalues = phash_values[np.searchsorted(has_phash, rows)]
    dvalues = dvalues[keep]
    # Distinct (phash, dhash) pairs only; every image then joins its pair's component.
    order = np.lexsort((dvalues, pvalues))
    p_sorted, d_sorted = pvalues[order], dvalues[order]
    new = np.ones(order.size, dtype=bool)
    new[1:] = (p_sorted[1:] != p_sorted[:-1]) | (d_sorted[1:] != d_sorted[:-1])
    node = np.cumsum(new) - 1  # node of each sorted image
    roots = joint_components(p_sorted[new], d_sorted[new], max_joint_distance, JOINT_MAX_PHASH)
    rep_image = rows[order[new]]  # one image per distinct pair
    uf.union(rows[order], rep_image[roots[node]])


def find_hash_duplicates(
    image_ids: Sequence[str],
    content_hashes: Sequence[str | None],
    phashes: Sequence[str | None],
    *,
    max_distance: int = 6,
    dhashes: Sequence[str | None] | None = None,
    max_joint_distance: int = DEFAULT_MAX_JOINT_DISTANCE,
) -> pa.Table:
    """Group images that are byte-identical ('exact') or perceptually close ('near').

    Exact: identical non-empty ``content_hashes``. Near: connected components of pairs whose
    64-bit ``phashes`` (16 hex characters) differ in at most ``max_distance`` bits, found by
    multi-index hashing on the distinct phash values, so exact copies and identical phashes are
    searched once. With ``dhashes`` (Phase II's 64-bit dHash, same format) pairs are also linked
    when their pHash differs in at most ``JOINT_MAX_PHASH`` (16) bits and pHash plus dHash in at
    most ``max_joint_distance`` (the crop rule of the module docstring); ``max_joint_distance``
    is ignored without ``dhashes``. A group joined several ways is one group; its rows are
    'exact' where the image's content hash is shared with another image, otherwise 'near'.
    Null or empty hashes are skipped; a malformed phash or dhash raises ``ValueError`` naming
    the image.
    """
    max_distance = _check_bits(max_distance, "max_distance", 63)
    max_joint_distance = _check_bits(max_joint_distance, "max_joint_distance", 127)
    ids = check_image_ids(image_ids)
    content = to_string_array(content_hashes, "content_hashes")
    ph = to_string_array(phashes, "phashes")
    dh = None if dhashes is None else to_string_array(dhashes, "dhashes")
    n = len(ids)
    if len(content) != n or len(ph) != n or (dh is not None and len(dh) != n):
        names = "image_ids, content_hashes" + (" and phashes" if dh is None
                                                else ", phashes and dhashes")
        got = f"{n}, {len(content)}, {len(ph)}" + ("" if dh is None else f", {len(dh)}")
        raise ValueError(f"{names} must have the same length, got {got}")
    if n == 0:
        return empty_table()

    uf = UnionFind(n)
    kind = np.zeros(n, dtype=np.int8)

    # Exact groups: identical content hash.
    has_content = np.flatnonzero(present(content))
    if has_content.size:
        codes = (
            pc.dictionary_encode(content.take(pa.array(has_content))).indices.to_numpy()
        ).astype(np.int64)
        n_codes = int(codes.max()) + 1
        first = np.full(n_codes, n, dtype=np.int64)
        np.minimum.at(first, codes, has_content)
        uf.union(has_content, first[codes])
        shared = np.bincount(codes, minlength=n_codes)[codes] >= 2
        kind[has_content[shared]] = STRENGTH["exact"]

    # Near groups: search distinct phash values only, then link every image to its value's
    # component (identical phashes join through that too).
    has_phash = np.flatnonzero(present(ph))
    values = parse_hashes(ids, ph, has_phash)
    if has_phash.size:
        uniq, first_pos, inverse = np.unique(values, return_index=True, return_inverse=True)
        roots = near_components(uniq, max_distance)
        rep_image = has_phash[first_pos]  # one image per distinct phash value
        uf.union(has_phash, rep_image[roots[inverse.ravel()]])

    if dh is not None:
        _link_joint(uf, ids, values, has_phash, dh, max_joint_distance)

    roots = uf.roots()
    kind[kind == 0] = STRENGTH["near"]
    return groups_table(ids, roots, kind)


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
    ids = check_image_ids(image_ids)
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
        return empty_table()
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

    uf = UnionFind(n)
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
    kind = np.full(n, STRENGTH["embedding"], dtype=np.int8)
    return groups_table(ids, roots, kind)
