"""How rows are cut into blocks on the Ray path: a small first part for early results, then
blocks that keep every actor busy, at most a part each."""

from exoray.engine.part_plan import BLOCKS_PER_ACTOR, block_sizes, first_part_rows


def test_the_first_block_is_small_and_later_ones_nearly_full_size_on_a_large_run():
    sizes = block_sizes(10_000, part_rows=1000, batch_size=32, pool_size=2)
    assert sizes[0] == 125
    assert sum(sizes) == 10_000
    assert all(980 <= size <= 1000 for size in sizes[1:])
    assert len(sizes) == 11  # 125 + 10 x ~988: few large parts, as Drive wants


def test_every_actor_gets_the_same_share_of_a_small_run():
    sizes = block_sizes(3000, part_rows=1000, batch_size=64, pool_size=2)
    assert sizes[0] == 125 and sum(sizes) == 3000
    assert len(sizes) - 1 == BLOCKS_PER_ACTOR * 2  # not 1000/1000/875: one actor would do 1,875
    assert max(sizes[1:]) - min(sizes[1:]) <= 1


def test_no_block_is_larger_than_a_part_nor_smaller_than_a_model_batch():
    sizes = block_sizes(1000, part_rows=64, batch_size=32, pool_size=4)
    assert sizes[0] == 32
    assert all(32 <= size <= 64 for size in sizes) and sum(sizes) == 1000
    assert (len(sizes) - 1) % 4 == 0  # a multiple of the 4 actors
    assert block_sizes(200, part_rows=1000, batch_size=32, pool_size=2) == [125, 38, 37]
    assert first_part_rows(1) == 1 and first_part_rows(800) == 100


def test_tiny_and_empty_runs():
    assert block_sizes(0, part_rows=1000, batch_size=32, pool_size=2) == []
    assert block_sizes(5, part_rows=1000, batch_size=32, pool_size=2) == [5]
    assert block_sizes(1, part_rows=1, batch_size=1, pool_size=1) == [1]
    assert block_sizes(130, part_rows=1000, batch_size=32, pool_size=2) == [125, 5]
