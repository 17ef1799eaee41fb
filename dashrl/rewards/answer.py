"""Answer formats: where a completion states its final answer, and the instruction that asks for it.

``task.answer_format`` names one; the verifier reads the answer with its
``extract`` and the prompt ends with its ``instruction``, so the two agree.

    boxed        the last ``\\boxed{...}`` (brace-matched; MATH's convention)
    answer_tag   the last ``<answer>...</answer>`` block (reasoning-gym's convention)
    last_number  the last number in the completion (``-12``, ``3.5``, ``1,234`` -> ``1234``)
    hash         a final line ``#### 42`` (GSM8K's convention)
    regex:PAT    the last match of the regular expression PAT: its first group if it has
                 one, else the whole match (no instruction: say it in task.prompt_template)

Each built-in task has a default (testbed and math tasks: boxed, rg: answer_tag)
and keeps its own extraction when the format is left unset. A completion with
no answer in the format scores 0 with the format's ``missing`` reason
("no_box", "no_answer", "no_number", "no_hash", "no_match").

Simplifications: ``last_number`` reads plain decimals only (no fractions,
exponents or words), so ``1/2`` answers ``2``; a regex is searched with
``re.DOTALL`` and no other flags.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable

from dashrl.rewards.math import extract_boxed, extract_hash_answer

FORMATS = ("boxed", "answer_tag", "last_number", "hash")
REGEX_PREFIX = "regex:"

_ANSWER_TAG = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)
_NUMBER = re.compile(r"-?\d+(?:,\d{3})*(?:\.\d+)?")


@dataclass(frozen=True)
class AnswerFormat:
    """name: as configured;  extract: completion -> answer text or None;
    instruction: sentence appended to the prompt (None for a regex);  missing: reason when no answer is found."""

    name: str
    extract: Callable[[str], str | None]
    instruction: str | None
    missing: str


def extract_answer_tag(text: str) -> str | None:
    """Content of the last ``<answer>...</answer>`` block, stripped."""
    found = _ANSWER_TAG.findall(text)
    return found[-1].strip() if found else None


def extract_last_number(text: str) -> str | None:
    """The last number in ``text``, thousands commas removed (``"x = 1,234."`` -> ``"1234"``)."""
    found = _NUMBER.findall(text)
    return found[-1].replace(",", "") if found else None


def _regex_extractor(pattern: re.Pattern) -> Callable[[str], str | None]:
    def extract(text: str) -> str | None:
        last = None
        for last in pattern.finditer(text):
            pass
        if last is None:
            return None
        return (last.group(1) if pattern.groups else last.group(0)).strip()

    return extract


BUILT_IN = {
    "boxed": AnswerFormat("boxed", extract_boxed, "Put your final answer within \\boxed{}.", "no_box"),
    "answer_tag": AnswerFormat("answer_tag", extract_answer_tag,
                               "Give only the final answer between <answer> and </answer> tags.", "no_answer"),
    "last_number": AnswerFormat("last_number", extract_last_number,
                                "End your reply with the final answer as a number.", "no_number"),
    "hash": AnswerFormat("hash", extract_hash_answer, "End with a last line of the form '#### <answer>'.", "no_hash"),
}


def answer_format(spec: str) -> AnswerFormat:
    """The format named by ``spec`` (a name of FORMATS or ``regex:PATTERN``); raises ValueError if unknown."""
    if spec in BUILT_IN:
        return BUILT_IN[spec]
    if spec.startswith(REGEX_PREFIX):
        source = spec[len(REGEX_PREFIX):]
        if not source:
            raise ValueError("regex: needs a pattern, e.g. 'regex:Answer: (\\S+)'")
        try:
            pattern = re.compile(source, re.DOTALL)
        except re.error as exc:
            raise ValueError(f"not a valid regular expression: {exc}") from None
        return AnswerFormat(spec, _regex_extractor(pattern), None, "no_match")
    raise ValueError(f"unknown answer format; use one of {', '.join(FORMATS)} or regex:PATTERN")
