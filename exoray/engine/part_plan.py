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

    The first block is :func:`first_part_rows`. The rest are split evenly into a multiple of
    ``pool_size`` blocks of at most ``part_rows`` rows, so every actor gets the same share (an
    actor left with one more full block than the others is what a small run waits for). No
    block is smaller than the first (the sink's ``min_rows_per_write``, so each is one part).
    """
    if n_rows <= 0:
        return []
    first = min(n_rows, first_part_rows(part_rows, batch_size))
    rest = n_rows - first
    if rest == 0:
        return [first]
    pools = max(1, pool_size)
    count = -(-rest // part_rows)
    count = -(-count // pools) * pools
    count = max(1, min(count, rest // first))
    size, extra = divmod(rest, count)
    return [first] + [size + 1] * extra + [size] * (count - extra)
