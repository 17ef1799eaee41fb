"""Task wrappers for the task settings that apply to every task: answer format and user reward.

``FormattedTask`` reads answers in another ``task.answer_format``: its problems'
prompts end with the format's instruction (so the prompt asks for what the
verifier reads), and a completion scores by the format's extraction followed
by the inner task's ``check_answer(answer, problem)``. ``VerifiedTask``
replaces a task's scoring with a verifier (``task.reward``), keeping its
problems. Both keep the inner task's name, problem ids and training stream.

Simplification: the instruction is appended to the problem text (before
``task.prompt_template`` and the chat template), so SFT reference solutions
written in the task's own format are not rewritten.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Iterator

from dashrl.rewards.answer import AnswerFormat
from dashrl.rewards.result import RewardResult
from dashrl.tasks.base import Problem, Task, score_all
from dashrl.tasks.dataset import Verifier


class FormattedTask:
    """``task`` with answers read in ``fmt`` (see the module docstring)."""

    def __init__(self, task: Task, fmt: AnswerFormat, append_instruction: bool = True):
        if not hasattr(task, "check_answer"):
            raise TypeError(f"task {task.name} cannot compare an extracted answer (no check_answer)")
        self.inner = task
        self.name = task.name
        self.format = fmt
        self.suffix = f"\n\n{fmt.instruction}" if append_instruction and fmt.instruction else ""

    def _with_instruction(self, problem: Problem) -> Problem:
        return replace(problem, prompt=problem.prompt + self.suffix) if self.suffix else problem

    def train_stream(self, seed: int) -> Iterator[Problem]:
        return map(self._with_instruction, self.inner.train_stream(seed))

    def eval_problems(self, n: int, seed: int) -> list[Problem]:
        return [self._with_instruction(p) for p in self.inner.eval_problems(n, seed)]

    def score(self, completion: str, problem: Problem) -> RewardResult:
        answer = self.format.extract(completion)
        if answer is None:
            return RewardResult(0.0, self.format.missing)
        return self.inner.check_answer(answer, problem)

    def check_answer(self, answer: str, problem: Problem) -> RewardResult:
        return self.inner.check_answer(answer, problem)


class VerifiedTask:
    """``task``'s problems scored by ``verifier`` instead of the task's own scoring."""

    def __init__(self, task: Task, verifier: Verifier):
        self.inner = task
        self.name = task.name
        self.verifier = verifier

    def train_stream(self, seed: int) -> Iterator[Problem]:
        return self.inner.train_stream(seed)

    def eval_problems(self, n: int, seed: int) -> list[Problem]:
        return self.inner.eval_problems(n, seed)

    def score(self, completion: str, problem: Problem) -> RewardResult:
        return self.verifier.score(completion, problem)

    def score_batch(self, completions: list[str], problems: list[Problem]) -> list[RewardResult]:
        """The verifier's batch scoring when it has one (a user reward counts its errors per batch)."""
        return score_all(self.verifier, completions, problems)
