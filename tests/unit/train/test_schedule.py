import pytest

from distill.errors import ConfigError
from distill.train.schedule import lr_factor, step_indices


def test_warmup_is_linear_from_first_step():
    assert lr_factor(0, 4, 100, "cosine", 0.1) == 0.25
    assert lr_factor(3, 4, 100, "cosine", 0.1) == 1.0


def test_cosine_reaches_min_ratio_and_passes_midpoint():
    assert lr_factor(10, 10, 110, "cosine", 0.1) == pytest.approx(1.0)
    # halfway through decay: 0.1 + 0.9 * 0.5 * (1 + cos(pi/2)) = 0.55
    assert lr_factor(60, 10, 110, "cosine", 0.1) == pytest.approx(0.55)
    assert lr_factor(110, 10, 110, "cosine", 0.1) == pytest.approx(0.1)


def test_linear_and_constant():
    assert lr_factor(35, 10, 110, "linear", 0.0) == pytest.approx(0.75)
    assert lr_factor(99, 10, 110, "constant", 0.0) == 1.0


def test_unknown_schedule_is_a_config_error():
    with pytest.raises(ConfigError, match="lr_schedule"):
        lr_factor(0, 1, 10, "exp", 0.0)


def test_step_indices_cover_each_epoch_once_and_are_reproducible():
    n, batch = 10, 4
    first_epoch = [i for step in range(2) for i in step_indices(step, batch, n, seed=3)] + step_indices(2, batch, n, 3)[:2]
    assert sorted(first_epoch) == list(range(n))
    assert step_indices(7, batch, n, 3) == step_indices(7, batch, n, 3)
    assert step_indices(0, batch, n, 3) != step_indices(0, batch, n, 4)


@pytest.mark.parametrize("world", [1, 2])
def test_window_split_is_independent_of_micro_batching(world):
    """4×1, 2×2 and 1×4 (and 2 ranks) read the same examples at the same positions: the window is indexed, then
    split, so the micro-batch size never changes which example an index or a sample key refers to."""
    from distill.train.schedule import micro_batches

    window = step_indices(5, 8, 13, seed=0)
    assert len(window) == 8 and len(set(window)) == 8  # one epoch's permutation: no repeats inside a window
    splits = {}
    for micro_size in (1, 2, 4):
        parts = [part for rank in range(world) for part in micro_batches(window, 5, rank, world, micro_size)]
        assert all(len(chosen) <= micro_size for chosen, _ in parts)
        splits[micro_size] = ([i for chosen, _ in parts for i in chosen], [p for _, pos in parts for p in pos])
    assert all(split == (window, list(range(40, 48))) for split in splits.values())  # step 5 · window 8 = 40


@pytest.mark.parametrize("max_steps, batch, n", [(3, 4, 50), (20, 4, 50), (7, 5, 12)])
def test_used_indices_are_exactly_what_the_steps_visit(max_steps, batch, n):
    from distill.train.schedule import used_indices

    visited = {i for step in range(max_steps) for i in step_indices(step, batch, n, seed=3)}
    assert used_indices(max_steps, batch, n, seed=3) == visited
