"""How rows are cut into parts: a small first part for early results, then few large ones."""

from exoray.engine.part_plan import block_sizes, first_part_rows


def test_the_first_part_is_small_and_every_later_one_full_size_on_a_large_run():
    sizes = block_sizes(10_000, part_rows=1000, batch_size=32, pool_size=2)
    assert sizes[0] == 125
    assert sum(sizes) == 10_000
    assert all(size == 1000 for size in sizes[1:-1])
    assert len(sizes) == 11  # 125 + 9 x 1000 + 875: few large parts, as Drive wants


def test_a_small_run_still_gives_every_actor_a_block():
    sizes = block_sizes(120, part_rows=40, batch_size=8, pool_size=2)
    assert sizes == [8, 40, 40, 32]
    sizes = block_sizes(300, part_rows=1000, batch_size=16, pool_size=2)
    assert sizes[0] == 125 and sum(sizes) == 300 and len(sizes) == 3


def test_no_block_is_smaller_than_a_model_batch_except_the_last():
    sizes = block_sizes(1000, part_rows=64, batch_size=32, pool_size=4)
    assert sizes[0] == 32
    assert all(size >= 32 for size in sizes[:-1]) and sum(sizes) == 1000
    assert first_part_rows(1) == 1 and first_part_rows(800) == 100


def test_tiny_and_empty_runs():
    assert block_sizes(0, part_rows=1000, batch_size=32, pool_size=2) == []
    assert block_sizes(5, part_rows=1000, batch_size=32, pool_size=2) == [5]
    assert block_sizes(1, part_rows=1, batch_size=1, pool_size=1) == [1]
