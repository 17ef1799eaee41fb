"""A task for timing runs: another task's prompts, with rewards that filter a set fraction of groups.

Rewards do not matter when only time is measured (``dashrl bench`` with
``bench.filter_frac``), but how many samples the gradient filter drops does.
``FilterRateTask`` wraps a task and scores so that exactly that fraction of the
training prompts' groups carry no signal:

- the n-th prompt of the training stream (n = 0, 1, ...) is a "filtered" one
  if floor((n + 1) f) > floor(n f): every 1/f-th prompt, so any window of
  prompts holds the fraction f of them, up to one;
- a filtered prompt's completions all get reward 0 (an all-equal group: zero
  advantage, dropped by ``algo.filter_tau = 0``); any other prompt's
  completions get 1, 0, 1, 0, ... in the order they come (a mixed group, which
  every completion of has a non-zero advantage when G is even).

The completion text is ignored. Every variant of a bench walks the same
training stream, so all of them see the same groups filtered. Prompts outside
the training stream (evaluation) count as not filtered.
"""

from __future__ import annotations

import math
from typing import Iterator

from dashrl.rewards.result import RewardResult
from dashrl.tasks.base import Problem, Task


def is_filtered(i: int, frac: float) -> bool:
    """Whether prompt ``i`` (from 0) is filtered at rate ``frac`` (see the module docstring)."""
    return math.floor((i + 1) * frac) > math.floor(i * frac)


def filtered_positions(n: int, frac: float) -> list[bool]:
    """Which of the first ``n`` prompts are filtered at rate ``frac`` (see the module docstring)."""
    return [is_filtered(i, frac) for i in range(n)]


class FilterRateTask:
    def __init__(self, task: Task, frac: float):
        if not 0.0 <= frac < 1.0:
            raise ValueError(f"filter fraction must lie in [0, 1), got {frac}")
        self.inner, self.frac = task, frac
        self.name = getattr(task, "name", "task")
        self._filtered: dict[str, bool] = {}

    def train_stream(self, seed: int) -> Iterator[Problem]:
        for i, problem in enumerate(self.inner.train_stream(seed)):
            self._filtered[problem.id] = is_filtered(i, self.frac)
            yield problem

    def eval_problems(self, n: int, seed: int) -> list[Problem]:
        return self.inner.eval_problems(n, seed)

    def score_batch(self, completions: list[str], problems: list[Problem]) -> list[RewardResult]:
        """Groups are runs of the same problem: all 0 for a filtered prompt, else 1, 0, 1, 0, ..."""
        out, position, previous = [], 0, None
        for problem in problems:
            position = position + 1 if problem.id == previous else 0
            previous = problem.id
            if self._filtered.get(problem.id, False):
                out.append(RewardResult(0.0, "timing_filtered"))
            else:
                out.append(RewardResult(float(position % 2 == 0), "timing_mixed"))
        return out

    def score(self, completion: str, problem: Problem) -> RewardResult:
        return self.score_batch([completion], [problem])[0]
