"""How rows are cut into parts: a small first part for early results, then few large ones."""

from exoray.engine.part_plan import block_sizes, first_part_rows


def test_the_first_part_is_small_and_every_later_one_nearly_full_size_on_a_large_run():
    sizes = block_sizes(10_000, part_rows=1000, batch_size=32, pool_size=2)
    assert sizes[0] == 125
    assert sum(sizes) == 10_000
    assert all(980 <= size <= 1000 for size in sizes[1:])
    assert len(sizes) == 11  # 125 + 10 x ~988: few large parts, as Drive wants


def test_every_actor_gets_the_same_share_of_a_small_run():
    sizes = block_sizes(3000, part_rows=1000, batch_size=64, pool_size=2)
    assert sizes == [125, 719, 719, 719, 718]  # not 1000/1000/875: one actor would do 1,875
    sizes = block_sizes(120, part_rows=40, batch_size=8, pool_size=2)
    assert sizes == [8, 28, 28, 28, 28]
    # Never below the first block (Ray would merge it with the next): 175 stays one block.
    assert block_sizes(300, part_rows=1000, batch_size=16, pool_size=2) == [125, 175]


def test_no_block_is_smaller_than_the_first_nor_than_a_model_batch():
    sizes = block_sizes(1000, part_rows=64, batch_size=32, pool_size=4)
    assert sizes[0] == 32
    assert all(32 <= size <= 64 for size in sizes) and sum(sizes) == 1000
    assert len(sizes) - 1 == 16  # 968 rows in 16 blocks: a multiple of the 4 actors
    assert block_sizes(150, part_rows=1000, batch_size=64, pool_size=4) == [125, 25]
    assert first_part_rows(1) == 1 and first_part_rows(800) == 100


def test_tiny_and_empty_runs():
    assert block_sizes(0, part_rows=1000, batch_size=32, pool_size=2) == []
    assert block_sizes(5, part_rows=1000, batch_size=32, pool_size=2) == [5]
    assert block_sizes(200, part_rows=1000, batch_size=32, pool_size=2) == [125, 75]
    assert block_sizes(1, part_rows=1, batch_size=1, pool_size=1) == [1]
