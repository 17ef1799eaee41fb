"""A task over fixed lists of problems (benchmark and user files), and the verifiers that score them.

``DatasetTask`` turns a training list and an evaluation list into the Task
protocol: an endless training stream that reshuffles every epoch with its own
seeded RNG, and a fixed evaluation list (``eval_problems(n)`` is its first n
problems, or all of them when n is larger; the seed argument is unused
because the held-out set was fixed when the task was built). Scoring goes to
a verifier: an object with ``score(completion, problem)`` and optionally a
batched ``score_batch``.

Simplifications: a held-out split is a seeded sample of whole records, and
disjointness is by prompt text (a training problem whose prompt equals an
evaluation prompt is dropped); the user reward is called once on an empty
completion when the task is built, to check its return type early.
"""

from __future__ import annotations

import importlib
import importlib.util
import math
import random
import sys
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Protocol, Sequence

from dashrl.errors import UserError
from dashrl.rewards.math import extract_boxed, score_math, score_math_answer
from dashrl.rewards.result import RewardResult
from dashrl.tasks.base import Problem, score_all
from dashrl.tasks.records import first_line


class Verifier(Protocol):
    """Scores a completion of a problem; never raises on model output. May add ``score_batch``."""

    def score(self, completion: str, problem: Problem) -> RewardResult: ...


def any_answer(score: Callable[[str, str], RewardResult], completion: str, problem: Problem) -> RewardResult:
    """Score against ``problem.answer``, then each of ``problem.answers`` until one is correct."""
    result = score(completion, problem.answer)
    for other in problem.answers:
        if result.score >= 1.0:
            break
        result = max(result, score(completion, other), key=lambda r: r.score)
    return result


class MathVerifier:
    """The last ``\\boxed{}`` must be mathematically equal to ``problem.answer`` (or one of ``problem.answers``)."""

    def score(self, completion: str, problem: Problem) -> RewardResult:
        return any_answer(score_math, completion, problem)

    def check_answer(self, answer: str, problem: Problem) -> RewardResult:
        return any_answer(score_math_answer, answer, problem)


class ExactVerifier:
    """The last ``\\boxed{}``, whitespace-trimmed, must equal ``problem.answer`` trimmed, character for character."""

    def score(self, completion: str, problem: Problem) -> RewardResult:
        boxed = extract_boxed(completion)
        if boxed is None:
            return RewardResult(0.0, "no_box")
        return self.check_answer(boxed, problem)

    def check_answer(self, answer: str, problem: Problem) -> RewardResult:
        if answer.strip() in {a.strip() for a in (problem.answer, *problem.answers)}:
            return RewardResult(1.0, "correct", answer)
        return RewardResult(0.0, "wrong_answer", answer)


@dataclass(frozen=True)
class FunctionVerifier:
    """A user reward ``fn(completion, problem) -> RewardResult | float``; a number becomes reason "user_reward".

    A call that raises scores 0 with reason "reward_error": the first traceback
    is printed once, every one is counted (``errors``), and a batch in which
    more than half of the completions raised stops the run with a UserError.
    A NaN or infinite reward is a UserError naming the function and problem.
    """

    fn: Callable[[str, Problem], RewardResult | float]
    ref: str  # how the user named it, for messages
    errors: list = field(default_factory=lambda: [0], compare=False)  # completions whose call raised, so far

    def score(self, completion: str, problem: Problem) -> RewardResult:
        try:
            value = self.fn(completion, problem)
        except Exception:  # the user's code: score 0, keep going, tell once
            self.errors[0] += 1
            if self.errors[0] == 1:
                print(f"dashrl: warning: task.reward {self.ref} raised on problem {problem.id}; such completions "
                      "score 0 (reason reward_error). First traceback:\n" + traceback.format_exc().rstrip(),
                      file=sys.stderr, flush=True)
            return RewardResult(0.0, "reward_error")
        if isinstance(value, RewardResult):
            score = value.score
        elif isinstance(value, (int, float)):  # bool too: True counts 1
            score, value = float(value), RewardResult(float(value), "user_reward")
        else:
            raise UserError(f"task.reward {self.ref} returned {type(value).__name__}; expected RewardResult or float")
        if not math.isfinite(score):
            raise UserError(f"task.reward {self.ref} returned {score} for problem {problem.id}; rewards must be "
                            "finite numbers")
        return value

    def score_batch(self, completions: list[str], problems: list[Problem]) -> list[RewardResult]:
        results = [self.score(c, p) for c, p in zip(completions, problems)]
        failed = sum(r.reason == "reward_error" for r in results)
        if results and failed > len(results) / 2:
            raise UserError(f"task.reward {self.ref} raised on {failed} of {len(results)} completions in one batch "
                            "(the first traceback is above); fix the function")
        return results

    def check(self, problem: Problem) -> None:
        """Call once on an empty completion: a crash or a wrong return type is reported now, not mid-run."""
        try:
            value = self.fn("", problem)
        except Exception as exc:
            raise UserError(f"task.reward {self.ref} failed on an empty completion: "
                            f"{type(exc).__name__}: {first_line(exc)}") from None
        if not isinstance(value, (RewardResult, int, float)):
            raise UserError(f"task.reward {self.ref} returned {type(value).__name__}; expected RewardResult or float")


def load_function(ref: str) -> Callable:
    """``module:function`` (importable) or ``path/to/file.py:function`` -> the function; raises UserError."""
    target, _, name = ref.rpartition(":")
    where = f"task.reward '{ref}'"
    try:
        if target.endswith(".py"):
            path = Path(target).expanduser()
            if not path.is_file():
                raise UserError(f"{where}: file not found: {target}")
            spec = importlib.util.spec_from_file_location(f"dashrl_user_reward_{path.stem}", path)
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
        else:
            module = importlib.import_module(target)
    except UserError:
        raise
    except ModuleNotFoundError as exc:
        raise UserError(f"{where}: no module named '{exc.name}' (is it on PYTHONPATH?)") from None
    except Exception as exc:  # the user's module failed while importing
        raise UserError(f"{where}: importing {target} failed: {type(exc).__name__}: {first_line(exc)}") from None
    fn = getattr(module, name, None)
    if fn is None:
        raise UserError(f"{where}: {target} has no attribute '{name}'")
    if not callable(fn):
        raise UserError(f"{where}: {target}.{name} is not callable")
    return fn


def holdout_split(problems: Sequence[Problem], eval_size: int, seed: int) -> tuple[list[Problem], list[Problem]]:
    """(train, eval): ``eval_size`` problems sampled with ``seed`` go to eval, in source order; all of them
    when there are no more than ``eval_size``. Training problems repeating an eval prompt are dropped."""
    if eval_size >= len(problems):
        return [], list(problems)
    chosen = set(random.Random(seed).sample(range(len(problems)), eval_size))
    held_out = [p for i, p in enumerate(problems) if i in chosen]
    return without_prompts([p for i, p in enumerate(problems) if i not in chosen], held_out), held_out


def without_prompts(train: Sequence[Problem], held_out: Sequence[Problem]) -> list[Problem]:
    """``train`` minus every problem whose prompt is one of ``held_out``'s."""
    prompts = {p.prompt for p in held_out}
    return [p for p in train if p.prompt not in prompts]


class DatasetTask:
    """The Task protocol over a training list and an evaluation list, scored by ``verifier``."""

    def __init__(self, name: str, train: Sequence[Problem], eval: Sequence[Problem], verifier: Verifier):
        self.name = name
        self.train = list(train)
        self.eval = list(eval)
        self.verifier = verifier

    def train_stream(self, seed: int) -> Iterator[Problem]:
        """Endless: every epoch is a fresh shuffle of the training list by one RNG seeded with ``seed``.

        Raises UserError at once (not on the first ``next``) when there is nothing to train on.
        """
        if not self.train:
            raise UserError(f"task '{self.name}' has no training problems: all {len(self.eval)} are held out for "
                            "evaluation (give task.eval_path, or a smaller task.eval_size)")
        return self._epochs(random.Random(seed))

    def _epochs(self, rng: random.Random) -> Iterator[Problem]:
        while True:
            order = list(range(len(self.train)))
            rng.shuffle(order)
            for i in order:
                yield self.train[i]

    def eval_problems(self, n: int, seed: int) -> list[Problem]:
        """The first ``n`` evaluation problems (all when ``n`` exceeds them); ``seed`` is unused."""
        return self.eval[:n]

    def score(self, completion: str, problem: Problem) -> RewardResult:
        return self.verifier.score(completion, problem)

    def check_answer(self, answer: str, problem: Problem) -> RewardResult:
        """An answer extracted by ``task.answer_format``, compared by the verifier (answer verifiers only)."""
        return self.verifier.check_answer(answer, problem)

    def score_batch(self, completions: list[str], problems: list[Problem]) -> list[RewardResult]:
        return score_all(self.verifier, completions, problems)
