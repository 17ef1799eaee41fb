"""The training reward: a weighted sum of named terms (``task.rewards``), each one logged on its own.

    reward = sum_i weight_i * term_i(completion, problem)

Terms:

    correctness        the task's verifier score (1 right, 0 wrong; task.reward when set)
    format             1 if the completion states an answer in the task's answer format, else 0
    module:function    your function fn(completion, problem) -> float or RewardResult (its score)
    file.py:function

The verifier always runs, even when no term uses it: accuracy and evaluation
are measured by correctness alone, never by the weighted sum. Without
``task.rewards`` the reward is correctness with weight 1, as before.

Simplification: terms are called one completion at a time (the verifier keeps
its batched path); a user term that raises stops the run with its error.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

from dashrl.config import RewardTerm, TaskConfig
from dashrl.rewards.answer import AnswerFormat, answer_format
from dashrl.rewards.result import RewardResult
from dashrl.tasks.base import Problem, Task, score_all

TermFn = Callable[[str, Problem], float]


@dataclass
class ScoredBatch:
    """Rewards of N completions.

    total:       (N,) weighted sums, the reward the advantages are computed from
    correctness: (N,) the verifier's results (score, reason, extracted answer)
    terms:       term label -> (N,) unweighted term values
    """

    total: list[float]
    correctness: list[RewardResult]
    terms: dict[str, list[float]]


def _format_term(fmt: AnswerFormat) -> TermFn:
    return lambda completion, problem: float(fmt.extract(completion) is not None)


def _user_term(ref: str) -> TermFn:
    from dashrl.tasks.dataset import FunctionVerifier, load_function

    verifier = FunctionVerifier(load_function(ref), ref)
    return lambda completion, problem: verifier.score(completion, problem).score


class WeightedReward:
    """``terms``: (label, weight, fn or None for correctness), in the order configured."""

    def __init__(self, terms: Sequence[tuple[str, float, TermFn | None]]):
        self.terms = list(terms)

    def score(self, task: Task, completions: Sequence[str], problems: Sequence[Problem]) -> ScoredBatch:
        correctness = score_all(task, completions, problems)
        values: dict[str, list[float]] = {}
        for label, _, fn in self.terms:
            if fn is None:
                values[label] = [r.score for r in correctness]
            else:
                values[label] = [float(fn(c, p)) for c, p in zip(completions, problems)]
        total = [sum(weight * values[label][i] for label, weight, _ in self.terms) for i in range(len(completions))]
        return ScoredBatch(total, correctness, values)


def reward_from_config(task: TaskConfig) -> WeightedReward:
    """``task.rewards`` as a WeightedReward (correctness alone when unset); raises UserError on a bad function."""
    from dashrl.tasks.registry import default_answer_format

    specs = task.rewards or [RewardTerm(fn="correctness")]
    fmt = answer_format(task.answer_format or default_answer_format(task.name))
    terms = []
    for spec in specs:
        if spec.fn == "correctness":
            fn = None
        elif spec.fn == "format":
            fn = _format_term(fmt)
        else:
            fn = _user_term(spec.fn)
        terms.append((spec.label, spec.weight, fn))
    return WeightedReward(terms)
