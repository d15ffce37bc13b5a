"""How a run's rows are cut into parts: a small first part, then parts of up to ``--part-rows``.

Why: a user on a runtime that dies every few hours wants results on disk within seconds of the
call (and a rerun after an early death to find some), while Drive wants few, large parts. So the
first part is a fraction of ``--part-rows`` and the later ones are larger, in both executors.
"""

from __future__ import annotations

# The first part is this fraction of --part-rows.
FIRST_PART_DIVISOR = 8
# Ray path: at least this many blocks per actor, so every actor of a small run works to the end
# (more would mean smaller parts: blocks of at least the first part's size are each one part).
BLOCKS_PER_ACTOR = 2


def first_part_rows(part_rows: int, batch_size: int = 1) -> int:
    """Rows in the first part: a fraction of ``part_rows``, never below one model batch."""
    return max(1, batch_size, part_rows // FIRST_PART_DIVISOR)


def block_sizes(n_rows: int, part_rows: int, batch_size: int, pool_size: int) -> list[int]:
    """Row counts of the blocks the Ray pipeline reads, in order.

    The first block is :func:`first_part_rows` and becomes the first part (the sink's
    ``min_rows_per_write`` is its size). The rest is split evenly into at least
    ``BLOCKS_PER_ACTOR`` blocks per actor, a multiple of ``pool_size``, each at most
    ``part_rows`` and at least a batch, so no actor is left with an extra block at the end;
    Ray's write bundles blocks smaller than the first into parts of at least that size.
    """
    if n_rows <= 0:
        return []
    first = min(n_rows, first_part_rows(part_rows, batch_size))
    rest = n_rows - first
    if rest == 0:
        return [first]
    pools = max(1, pool_size)
    count = max(-(-rest // part_rows), BLOCKS_PER_ACTOR * pools)
    count = -(-count // pools) * pools
    count = max(1, min(count, rest // max(1, batch_size)))
    size, extra = divmod(rest, count)
    return [first] + [size + 1] * extra + [size] * (count - extra)
