"""``rg:NAME`` tasks: procedurally generated problems from the reasoning-gym package, scored by its own scorers.

Answer format: reasoning-gym's own convention, the final answer between
``<answer>`` and ``</answer>`` tags (its ``extract_answer`` and system prompts
use them). Each prompt is the dataset's question followed by ``INSTRUCTION``
(in the prompt itself, so raw and chat formats both carry it). A completion's
last ``<answer>`` block goes to the dataset's ``score_answer``.

Data: evaluation problems are items 0..eval_size-1 of the dataset generated
with a seed derived from ``eval_seed``, built lazily. Training problems come
in chunks of ``CHUNK`` items, each chunk generated with a seed derived from
(train seed, chunk number), so the stream is endless and reproducible. A
training problem whose prompt is an evaluation prompt is skipped, so the two
are disjoint even where a dataset's problem space is small.

Simplifications: the reward is binary, 1 when the package gives full credit
(>= 1) and 0 otherwise; the package's partial credits (countdown gives 0.05
for a wrong expression) are dropped, as in the paper's binary rewards. Only
gsm_symbolic ships a worked solution (``answer_cot``); for other datasets the
SFT ``solution`` is the tagged answer alone. The dataset's default settings
(difficulty) are used unless ``task.rg_config`` sets them (checked against the
dataset's config class: an unknown key is an error). Another
``task.answer_format`` replaces ``INSTRUCTION`` with that format's. Scoring
regenerates a problem's item from its id when it is no longer among the recent
ones kept in memory.
"""

from __future__ import annotations

import difflib
import itertools
import random
from collections import OrderedDict
from typing import Any, Iterator

from dashrl.errors import UserError
from dashrl.rewards.result import RewardResult
from dashrl.tasks.base import Problem

INSTRUCTION = "Think step by step, then give only the final answer between <answer> and </answer> tags."
CHUNK = 1000  # items per generated training chunk (some datasets precompute per-item state at creation)
RECENT = 8192  # training items kept for scoring without regeneration


def dataset_seed(kind: str, seed: int, chunk: int = 0) -> int:
    """A 31-bit generator seed for (kind, seed, chunk); far apart, since reasoning-gym seeds item i with seed + i."""
    return random.Random(f"dashrl/{kind}/{seed}/{chunk}").getrandbits(31)


def _reasoning_gym():
    try:
        import reasoning_gym
    except ImportError:
        raise UserError("rg: tasks need the reasoning-gym package: pip install 'dashrl[tasks]'") from None
    return reasoning_gym


def dataset_names() -> list[str]:
    from reasoning_gym.factory import DATASETS

    return sorted(DATASETS)


def to_problem(entry: dict[str, Any], problem_id: str, instruction: str | None = INSTRUCTION) -> Problem:
    """A reasoning-gym item as a Problem: question + answer instruction, reference answer, tagged solution."""
    answer = "" if entry.get("answer") is None else str(entry["answer"])
    tagged = f"<answer>{answer}</answer>"
    worked = (entry.get("metadata") or {}).get("answer_cot")
    solution = f"{worked.rstrip()}\n{tagged}" if worked else tagged
    prompt = entry["question"].rstrip() + (f"\n\n{instruction}" if instruction else "")
    return Problem(id=problem_id, prompt=prompt, answer=answer, solution=solution if answer else None)


def dataset_options(dataset: str, options: dict[str, Any] | None) -> dict[str, Any]:
    """``task.rg_config`` checked against the dataset's config class; raises UserError on an unknown key."""
    import dataclasses

    from reasoning_gym.factory import DATASETS

    options = dict(options or {})
    known = [f.name for f in dataclasses.fields(DATASETS[dataset][1]) if f.name not in ("seed", "size")]
    for key in options:
        if key not in known:
            close = difflib.get_close_matches(key, known, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else f"; known: {', '.join(known)}"
            raise UserError(f"task.rg_config: rg:{dataset} has no setting '{key}'{hint}")
    return options


class ReasoningGymTask:
    """The Task protocol over one reasoning-gym dataset (see the module docstring)."""

    def __init__(self, dataset: str, eval_seed: int = 999, eval_size: int = 1024,
                 options: dict[str, Any] | None = None, instruction: str | None = INSTRUCTION):
        rg = _reasoning_gym()
        if dataset not in dataset_names():
            close = difflib.get_close_matches(dataset, dataset_names(), n=1)
            hint = f" (did you mean 'rg:{close[0]}'?)" if close else "; see reasoning_gym.factory.DATASETS"
            raise UserError(f"unknown reasoning-gym dataset '{dataset}'{hint}")
        self.name = f"rg:{dataset}"
        self.dataset = dataset
        self.eval_size = eval_size
        self.instruction = instruction
        options = dataset_options(dataset, options)
        self._create = lambda seed, size: rg.create_dataset(dataset, seed=seed, size=size, **options)
        self._eval_entries: list[dict] = []  # generated on demand, in order
        self._recent: OrderedDict[str, dict] = OrderedDict()
        try:
            self._eval_data = self._create(dataset_seed("eval", eval_seed), eval_size)
            self._eval_entry(0)  # settings a dataset only checks when it makes an item
        except (AssertionError, ValueError, TypeError) as exc:
            raise UserError(f"task.rg_config {options}: rejected by rg:{dataset}: {exc or type(exc).__name__}") from None

    # ------------------------------------------------------------ problems

    def _eval_entry(self, index: int) -> dict:
        while len(self._eval_entries) <= index:
            self._eval_entries.append(self._eval_data[len(self._eval_entries)])
        return self._eval_entries[index]

    def eval_problems(self, n: int, seed: int) -> list[Problem]:
        """The first ``n`` of the ``eval_size`` held-out problems (fixed by the task's eval seed; ``seed`` unused)."""
        return [to_problem(self._eval_entry(i), f"{self.name}/eval/{i}", self.instruction) for i in range(min(n, self.eval_size))]

    def train_stream(self, seed: int) -> Iterator[Problem]:
        """Endless and seeded; generates the whole held-out set first, to skip its prompts."""
        held_out = {to_problem(self._eval_entry(i), "", self.instruction).prompt for i in range(self.eval_size)}
        for chunk in itertools.count():
            data = self._create(dataset_seed("train", seed, chunk), CHUNK)
            for index in range(CHUNK):
                entry = data[index]
                problem = to_problem(entry, f"{self.name}/train/{seed}/{chunk}/{index}", self.instruction)
                if problem.prompt in held_out:
                    continue
                self._remember(problem.id, entry)
                yield problem

    def _remember(self, problem_id: str, entry: dict) -> None:
        self._recent[problem_id] = entry
        if len(self._recent) > RECENT:
            self._recent.popitem(last=False)

    def _entry(self, problem: Problem) -> dict:
        """The generator item behind ``problem``: kept, or regenerated from the id."""
        if problem.id in self._recent:
            return self._recent[problem.id]
        parts = problem.id.removeprefix(f"{self.name}/").split("/")
        if parts[0] == "eval" and len(parts) == 2:
            return self._eval_entry(int(parts[1]))
        if parts[0] == "train" and len(parts) == 4:
            seed, chunk, index = map(int, parts[1:])
            return self._create(dataset_seed("train", seed, chunk), CHUNK)[index]
        raise ValueError(f"problem '{problem.id}' does not belong to task {self.name}")

    # ------------------------------------------------------------- scoring

    def score(self, completion: str, problem: Problem) -> RewardResult:
        """1 if the last <answer> block gets full credit from the dataset's own scorer, else 0."""
        from reasoning_gym.utils import extract_answer

        answer = extract_answer(completion)
        if answer is None:
            return RewardResult(0.0, "no_answer")
        return self.check_answer(answer, problem)

    def check_answer(self, answer: str, problem: Problem) -> RewardResult:
        """1 if the dataset's scorer gives ``answer`` full credit (any answer format extracts it)."""
        entry = self._entry(problem)
        try:
            credit = self._eval_data.score_answer(answer, entry)
        except Exception:  # a scorer choking on odd model output is a wrong answer
            credit = 0.0
        if credit >= 1.0:
            return RewardResult(1.0, "correct", answer)
        return RewardResult(0.0, "wrong_answer", answer)
