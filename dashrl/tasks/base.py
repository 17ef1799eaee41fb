"""Prompts: the Problem type every task produces, the Task contract, batched scoring.

A task may score completions one at a time (``score``) or, when scoring is
expensive and parallel (code run in a sandbox), a whole batch at once
(``score_batch``). ``score_all`` is the one entry point the trainer and the
evaluator use: it takes the batch path when the task has one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Protocol, Sequence

from dashrl.rewards.result import RewardResult


@dataclass(frozen=True)
class Problem:
    """One prompt with what is needed to score (and imitate) an answer.

    id:       stable identifier, used in per-problem evaluation output
    prompt:   raw text given to the model (before any chat template)
    answer:   reference final answer, compared by the task's verifier ("" for code tasks)
    solution: optional reference solution (for pretraining / SFT)
    tests:    code tasks: a Python test program run after the completion's code
              (it raises or exits non-zero on failure)
    answers:  further accepted final answers (a record whose answer is a list: any of them is correct)
    """

    id: str
    prompt: str
    answer: str
    solution: str | None = None
    tests: str | None = None
    answers: tuple[str, ...] = ()


class Task(Protocol):
    """A source of prompts plus a verifier.

    Optional: ``score_batch(completions, problems) -> list[RewardResult]`` for
    tasks that score many completions faster together than one by one.
    """

    name: str

    def train_stream(self, seed: int) -> Iterator[Problem]:
        """An endless, seeded stream of training problems (disjoint from evaluation)."""
        ...

    def eval_problems(self, n: int, seed: int) -> list[Problem]:
        """``n`` held-out problems, the same for the same arguments."""
        ...

    def score(self, completion: str, problem: Problem) -> RewardResult:
        """Score one completion; never raises on model output."""
        ...


def score_all(task: Task, completions: Sequence[str], problems: Sequence[Problem]) -> list[RewardResult]:
    """Score ``completions[i]`` against ``problems[i]``, in one batch if the task supports it.

    Anything with ``score`` (and optionally ``score_batch``) works: a task or a verifier."""
    batch = getattr(task, "score_batch", None)
    if batch is not None:
        return list(batch(list(completions), list(problems)))
    return [task.score(c, p) for c, p in zip(completions, problems)]
