"""Prompts: the Problem type every task produces, and the Task contract."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Protocol

from dashrl.rewards.result import RewardResult


@dataclass(frozen=True)
class Problem:
    """One prompt with what is needed to score (and imitate) an answer.

    id:       stable identifier, used in per-problem evaluation output
    prompt:   raw text given to the model
    answer:   reference final answer, compared by the task's verifier
    solution: optional reference solution (for pretraining / SFT)
    """

    id: str
    prompt: str
    answer: str
    solution: str | None = None


class Task(Protocol):
    """A source of prompts plus a verifier."""

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
