"""FilterRateTask: a set fraction of groups all-equal (filtered), the rest mixed, whatever the text."""

import itertools

import pytest

from dashrl.tasks.testbed import ArithmeticTask
from dashrl.tasks.timing import FilterRateTask, filtered_positions


def test_filtered_positions_hold_the_rate_in_every_window():
    # f = 0.25: floor((i + 1) / 4) > floor(i / 4) at i = 3, 7, 11, ...
    assert [i for i, f in enumerate(filtered_positions(12, 0.25)) if f] == [3, 7, 11]
    # f = 0.2 over 1000 prompts: exactly 200, and any 10 consecutive prompts hold 2
    marks = filtered_positions(1000, 0.2)
    assert sum(marks) == 200 and all(sum(marks[i : i + 10]) == 2 for i in range(990))
    assert not any(filtered_positions(50, 0.0))


def test_rewards_filter_the_set_groups_and_mix_the_others():
    task = FilterRateTask(ArithmeticTask(), 0.5)
    problems = list(itertools.islice(task.train_stream(1), 4))  # f = 0.5: prompts 1 and 3 filtered
    rows = [p for p in problems for _ in range(4)]  # groups of G = 4, contiguous as the trainer scores them
    scores = [r.score for r in task.score_batch(["whatever"] * len(rows), rows)]
    assert scores == [1, 0, 1, 0, 0, 0, 0, 0, 1, 0, 1, 0, 0, 0, 0, 0]
    # evaluation problems are not in the training stream: never filtered
    held = task.eval_problems(2, 999)
    assert [r.score for r in task.score_batch(["x", "x"], [held[0], held[0]])] == [1.0, 0.0]
    with pytest.raises(ValueError):
        FilterRateTask(ArithmeticTask(), 1.0)
