"""The built-in testbed task: multi-step arithmetic, scored by its boxed answer.

Training problems come from an endless seeded stream that skips every prompt of
the held-out set, so evaluation never sees a training prompt. The harder
out-of-distribution variant has more operators and larger values.
"""

from __future__ import annotations

import itertools
import random
from typing import Iterator

from dashrl.rewards.math import score_math, score_math_answer
from dashrl.rewards.result import RewardResult
from dashrl.tasks.base import Problem
from dashrl.testbed.arithmetic import ArithmeticSpec, make_problem

IN_DISTRIBUTION = ArithmeticSpec()
HARDER = ArithmeticSpec(min_ops=4, max_ops=5, max_value=29)


class ArithmeticTask:
    def __init__(self, name: str = "testbed", spec: ArithmeticSpec = IN_DISTRIBUTION, holdout_seed: int = 999, holdout_size: int = 1024):
        self.name = name
        self.spec = spec
        self._held_out = {p.prompt for p in self.eval_problems(holdout_size, holdout_seed)}

    def train_stream(self, seed: int) -> Iterator[Problem]:
        rng = random.Random(seed)
        for i in itertools.count():
            problem = make_problem(rng, self.spec, f"{self.name}-train-{i}")
            if problem.prompt not in self._held_out:
                yield problem

    def eval_problems(self, n: int, seed: int) -> list[Problem]:
        rng = random.Random(seed)
        return [make_problem(rng, self.spec, f"{self.name}-eval-{i}") for i in range(n)]

    def score(self, completion: str, problem: Problem) -> RewardResult:
        return score_math(completion, problem.answer, symbolic=False)  # integer answers: no math-verify

    def check_answer(self, answer: str, problem: Problem) -> RewardResult:
        """An answer already extracted (another ``task.answer_format``), compared as ``score`` does."""
        return score_math_answer(answer, problem.answer, symbolic=False)
