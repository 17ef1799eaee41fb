"""Math benchmark records (MATH / MATH-500, GSM8K) -> Problems scored by the math reward.

``math_problems`` reads MATH-style records (``problem``, ``answer``,
``solution``, ``unique_id``); a record without an answer takes the last
``\\boxed{}`` of its solution. ``gsm8k_problems`` reads GSM8K records
(``question``, and ``answer`` = reasoning ending in ``#### 72``): the answer is
the part after ``####`` without thousands commas, and the solution is the
reasoning rewritten to end in ``The answer is $\\boxed{72}$.``, so SFT on it
teaches the boxed format the reward reads.

``fields`` maps Problem fields (id, prompt, answer, solution) to record keys
and overrides the defaults key by key. Records are numbered in file order from
1 (the line of a JSONL file), and a bad record raises
``UserError("SOURCE line N: missing field 'KEY'")``. A record without an id
gets ``SOURCE:N``.

Prompt: the problem text as is, as in the paper. ``BOXED_INSTRUCTION_TEMPLATE``
is a ready ``task.prompt_template`` that asks for a boxed answer, for models
that do not box on their own (chat/instruct models usually need it).

Simplifications: GSM8K calculator annotations (``<<48/2=24>>``) are removed
from the SFT solution; the prompt keeps the raw question text.
"""

from __future__ import annotations

import re
from typing import Any, Mapping

from dashrl.errors import UserError
from dashrl.rewards.math import extract_boxed, extract_hash_answer
from dashrl.tasks.base import Problem
from dashrl.tasks.records import field_text, record_value

BOXED_INSTRUCTION_TEMPLATE = "{prompt}\n\nPlease reason step by step, and put your final answer within \\boxed{}."

MATH_FIELDS = {"id": "unique_id", "prompt": "problem", "answer": "answer", "solution": "solution"}
GSM8K_FIELDS = {"id": "id", "prompt": "question", "answer": "answer"}

_CALCULATOR_ANNOTATION = re.compile(r"<<[^<>\n]*>>")


def _field_keys(defaults: Mapping[str, str], fields: Mapping[str, str] | None, source: str) -> dict[str, str]:
    """Problem field -> record key: the defaults, overridden by ``fields``; unknown names raise."""
    unknown = sorted(set(fields or {}) - set(defaults))
    if unknown:
        raise UserError(f"{source}: unknown field name(s) {', '.join(unknown)} in fields "
                        f"(known: {', '.join(defaults)})")
    return dict(defaults) | dict(fields or {})


class _Record:
    """One record with its position, for reading fields with messages that say where."""

    def __init__(self, row: dict, source: str, number: int, keys: dict[str, str]):
        self.row, self.source, self.number, self.keys = row, source, number, keys

    def error(self, message: str) -> UserError:
        return UserError(f"{self.source} line {self.number}: {message}")

    def get(self, name: str) -> str | None:
        """The text of Problem field ``name``, or None if its key is absent or null."""
        value: Any = record_value(self.row, self.keys[name])
        return None if value is None else field_text(value, f"{self.source} line {self.number}", self.keys[name])

    def require(self, name: str) -> str:
        """The text of Problem field ``name``; raises if it is absent, null or blank."""
        text = self.get(name)
        if text is None:
            raise self.error(f"missing field '{self.keys[name]}'")
        if not text.strip():
            raise self.error(f"field '{self.keys[name]}' is empty")
        return text

    def problem_id(self) -> str:
        return self.get("id") or f"{self.source}:{self.number}"


def _records(records: list[dict], source: str, keys: dict[str, str]) -> list[_Record]:
    out = []
    for number, row in enumerate(records, 1):
        if not isinstance(row, dict):
            raise UserError(f"{source} line {number}: expected a JSON object, got {type(row).__name__}")
        out.append(_Record(row, source, number, keys))
    return out


def math_problems(records: list[dict], source: str, fields: dict | None = None) -> list[Problem]:
    """Problems from MATH-style records; raises UserError naming source, line and field."""
    problems = []
    for record in _records(records, source, _field_keys(MATH_FIELDS, fields, source)):
        prompt = record.require("prompt")
        solution = record.get("solution")
        answer = record.get("answer")
        if answer is None:
            if solution is None:
                raise record.error(f"missing field '{record.keys['answer']}' (and no '{record.keys['solution']}' "
                                   "to take a boxed answer from)")
            answer = extract_boxed(solution)
            if answer is None or not answer.strip():
                raise record.error(f"missing field '{record.keys['answer']}', and field "
                                   f"'{record.keys['solution']}' has no \\boxed{{}} answer")
        if not answer.strip():
            raise record.error(f"field '{record.keys['answer']}' is empty")
        problems.append(Problem(id=record.problem_id(), prompt=prompt, answer=answer.strip(), solution=solution))
    return problems


def gsm8k_final_answer(answer_text: str) -> str | None:
    """``"...\\n#### 1,234"`` -> ``"1234"``: the part after the last ``####``, commas dropped; None if absent/blank."""
    final = extract_hash_answer(answer_text)
    if final is None:
        return None
    final = final.replace(",", "").strip()
    return final or None


def gsm8k_solution(answer_text: str, final: str) -> str:
    """The reasoning before ``####`` without calculator annotations, ending in ``$\\boxed{final}$``."""
    reasoning = _CALCULATOR_ANNOTATION.sub("", answer_text[: answer_text.rfind("####")]).strip()
    closing = f"The answer is $\\boxed{{{final}}}$."
    return f"{reasoning}\n{closing}" if reasoning else closing


def gsm8k_problems(records: list[dict], source: str, fields: dict | None = None) -> list[Problem]:
    """Problems from GSM8K records; raises UserError naming source, line and field."""
    problems = []
    for record in _records(records, source, _field_keys(GSM8K_FIELDS, fields, source)):
        prompt = record.require("prompt")
        answer_text = record.require("answer")
        final = gsm8k_final_answer(answer_text)
        if final is None:
            raise record.error(f"field '{record.keys['answer']}' does not end in '#### <final answer>'")
        problems.append(Problem(id=record.problem_id(), prompt=prompt, answer=final,
                                solution=gsm8k_solution(answer_text, final)))
    return problems
