"""The built-in testbed task: multi-step arithmetic, scored by its boxed answer.

Training problems come from an endless seeded stream that skips every prompt of
the held-out set, so evaluation never sees a training prompt. The harder
out-of-distribution variant has more operators and larger values.

Two disjoint halves of the problem space (split by a hash of the prompt): the
base model's pretraining corpus (``pretrain_stream``: step-by-step solutions)
and the task's training stream (``train_stream``: RL prompts and the SFT
baselines' prompts, whose reference solutions are human-written, see
``dashrl.testbed.arithmetic``). The study's base model (``testbed-study``) is
pretrained on the first half only, so it has seen neither SFT-H's problems nor
its solution style; the default base (``testbed``, the demo's) is pretrained on
step-by-step solutions of the whole space. Held-out problems come from the whole space.
"""

from __future__ import annotations

import itertools
import random
import zlib
from typing import Iterator

from dashrl.rewards.math import score_math, score_math_answer
from dashrl.rewards.result import RewardResult
from dashrl.tasks.base import Problem
from dashrl.testbed.arithmetic import ArithmeticSpec, make_problem


def in_pretraining_half(prompt: str) -> bool:
    """Whether a prompt belongs to the pretraining half of the problem space (the other half is the task's)."""
    return zlib.crc32(b"pretrain-split:" + prompt.encode()) % 2 == 0

IN_DISTRIBUTION = ArithmeticSpec()
HARDER = ArithmeticSpec(min_ops=4, max_ops=5, max_value=29)


class ArithmeticTask:
    def __init__(self, name: str = "testbed", spec: ArithmeticSpec = IN_DISTRIBUTION, holdout_seed: int = 999, holdout_size: int = 1024):
        self.name = name
        self.spec = spec
        self._held_out = {p.prompt for p in self.eval_problems(holdout_size, holdout_seed)}

    def train_stream(self, seed: int) -> Iterator[Problem]:
        """Training problems (the task's half, held-out ones skipped), with human-written reference solutions."""
        return self._stream(seed, pretraining=False, style="human", prefix="train")

    def pretrain_stream(self, seed: int, half: bool = True) -> Iterator[Problem]:
        """A base model's pretraining corpus, with step-by-step solutions: the other half (``half``) or the
        whole space (held-out problems skipped either way)."""
        return self._stream(seed, pretraining=True if half else None, style="steps", prefix="pretrain")

    def _stream(self, seed: int, pretraining: bool | None, style: str, prefix: str) -> Iterator[Problem]:
        """``pretraining``: True / False = only that half of the space; None = the whole space."""
        rng = random.Random(seed)
        for i in itertools.count():
            problem = make_problem(rng, self.spec, f"{self.name}-{prefix}-{i}", style)
            if problem.prompt in self._held_out:
                continue
            if pretraining is None or in_pretraining_half(problem.prompt) == pretraining:
                yield problem

    def eval_problems(self, n: int, seed: int) -> list[Problem]:
        rng = random.Random(seed)
        return [make_problem(rng, self.spec, f"{self.name}-eval-{i}") for i in range(n)]

    def score(self, completion: str, problem: Problem) -> RewardResult:
        return score_math(completion, problem.answer, symbolic=False)  # integer answers: no math-verify

    def check_answer(self, answer: str, problem: Problem) -> RewardResult:
        """An answer already extracted (another ``task.answer_format``), compared as ``score`` does."""
        return score_math_answer(answer, problem.answer, symbolic=False)
