"""The duplicate table shared by every finder: input checks, hash parsing, the grouped output,
merging and summary (see :mod:`exoray.image.dupes` for the finders).

    image_id: string   group_id: int64   kind: string ('exact' | 'near' | 'embedding')
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from exoray.image.hash_index import UnionFind

# Strongest evidence first; merging keeps the strongest kind per image.
KINDS: tuple[str, ...] = ("exact", "near", "embedding")
STRENGTH = {"embedding": 1, "near": 2, "exact": 3}
_CODE_NAMES = pa.array(["", "embedding", "near", "exact"], type=pa.string())

SCHEMA = pa.schema(
    [
        pa.field("image_id", pa.string(), nullable=False),
        pa.field("group_id", pa.int64(), nullable=False),
        pa.field("kind", pa.string(), nullable=False),
    ]
)

_HASH_HEX_CHARS = 16
_HEX_LUT = np.full(256, 255, dtype=np.uint8)
for _i, _c in enumerate(b"0123456789abcdef"):
    _HEX_LUT[_c] = _i
for _i, _c in enumerate(b"ABCDEF"):
    _HEX_LUT[_c] = 10 + _i
del _i, _c


# --------------------------------------------------------------------------------------------
# input handling


def to_string_array(values: Any, name: str) -> pa.Array:
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


def check_image_ids(image_ids: Any) -> pa.Array:
    """Image ids must be present and unique: they are the rows of the output."""
    ids = to_string_array(image_ids, "image_ids")
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


def present(values: pa.Array) -> np.ndarray:
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


def parse_hashes(
    ids: pa.Array, hashes: pa.Array, positions: np.ndarray, what: str = "phash"
) -> np.ndarray:
    """Parse 16-hex-char strings at ``positions`` to uint64, vectorised over the Arrow buffer."""
    if positions.size == 0:
        return np.zeros(0, dtype=np.uint64)
    error = f"{what} value(s) (expected 16 hex characters)"
    sub = hashes.take(pa.array(positions))
    lengths = pc.binary_length(sub).to_numpy(zero_copy_only=False)
    bad = lengths != _HASH_HEX_CHARS
    if bad.any():
        raise _bad_values_error(error, ids, hashes, positions[bad])
    # Every value is exactly 16 bytes and Arrow stores them back to back: read them as a matrix.
    offsets = np.frombuffer(
        sub.buffers()[1], dtype=np.int32, count=len(sub) + 1, offset=4 * sub.offset
    )
    data = np.frombuffer(sub.buffers()[2], dtype=np.uint8)
    raw = data[offsets[0] : offsets[0] + _HASH_HEX_CHARS * len(sub)].reshape(-1, _HASH_HEX_CHARS)
    nibbles = _HEX_LUT[raw]
    bad = (nibbles == 255).any(axis=1)
    if bad.any():
        raise _bad_values_error(error, ids, hashes, positions[bad])
    out = np.zeros(len(sub), dtype=np.uint64)
    for k in range(_HASH_HEX_CHARS):
        out = (out << np.uint64(4)) | nibbles[:, k].astype(np.uint64)
    return out


# --------------------------------------------------------------------------------------------
# output


def empty_table() -> pa.Table:
    return SCHEMA.empty_table()


def groups_table(ids: pa.Array, roots: np.ndarray, kind_code: np.ndarray) -> pa.Table:
    """Turn per-node component labels into the output table (groups of >= 2, stable ids)."""
    n = len(ids)
    if n == 0:
        return empty_table()
    sizes = np.bincount(roots, minlength=n)
    member = np.flatnonzero(sizes[roots] >= 2)
    if member.size == 0:
        return empty_table()
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
        return empty_table()
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
    uf = UnionFind(len(ids))
    uf.union(node, first[group])
    kind = np.zeros(len(ids), dtype=np.int8)
    np.maximum.at(kind, node, strength)
    return groups_table(ids, uf.roots(), kind)


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
