"""How a run's rows are cut into parts: a small first part, then full-size ones.

Why: a user on a runtime that dies every few hours wants results on disk within seconds of the
call (and a rerun after an early death to find some), while Drive wants few, large parts. So the
first part is a fraction of ``--part-rows`` and every later one is larger, in both executors.
"""

from __future__ import annotations

# The first part is this fraction of --part-rows.
FIRST_PART_DIVISOR = 8


def first_part_rows(part_rows: int, batch_size: int = 1) -> int:
    """Rows in the first part: a fraction of ``part_rows``, never below one model batch."""
    return max(1, batch_size, part_rows // FIRST_PART_DIVISOR)


def block_sizes(n_rows: int, part_rows: int, batch_size: int, pool_size: int) -> list[int]:
    """Row counts of the blocks the Ray pipeline reads, in order; each becomes one part.

    The first block is :func:`first_part_rows`; the rest are up to ``part_rows`` rows, fewer when
    a small run needs one block per actor to keep all ``pool_size`` actors busy, never fewer than
    the first block's rows (the sink's ``min_rows_per_write``, so Ray writes one block per part).
    """
    if n_rows <= 0:
        return []
    first = min(n_rows, first_part_rows(part_rows, batch_size))
    rest = n_rows - first
    per_actor = -(-rest // max(1, pool_size))
    size = max(first, min(part_rows, per_actor))
    sizes = [first] + [size] * (rest // size)
    if rest % size:
        sizes.append(rest % size)
    return sizes
