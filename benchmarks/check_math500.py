"""Check the math verifier on all of MATH-500: references must verify, altered answers must not.

For every item:

* positive: ``score_math(solution, answer)`` must be 1, i.e. the last
  ``\\boxed{}`` of the reference solution verifies against the ``answer`` field;
* negative: the answer with one digit changed (d -> (d + 1) % 10) must score 0.
  The digit changed is the last one of the answer's value: digits inside or
  after a unit (``\\text{..}``, ``\\mbox{..}``, ``\\mathrm{..}``) are skipped
  when the value before the unit has one, because the verifier ignores units by
  design (``15\\mbox{ cm}^2`` -> ``16\\mbox{ cm}^2``, not ``cm}^3``). Items whose
  answer has no digit are not counted. The items where only a unit digit could
  be changed that way are listed separately ("unit digit changes").

Prints both percentages, lists every failure, and exits 1 if either is below
99%. Usage::

    .venv/bin/python benchmarks/check_math500.py [../shared/data/math500_test.jsonl]
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from dashrl.errors import UserError
from dashrl.rewards.math import score_math
from dashrl.tasks.math import math_problems
from dashrl.tasks.records import load_records

DEFAULT_PATH = Path(__file__).resolve().parents[2] / "shared" / "data" / "math500_test.jsonl"
THRESHOLD = 0.99

_DIGIT = re.compile(r"\d")
_UNIT = re.compile(r"\\(?:text|mbox|mathrm|textnormal)\s*\{")


def _bump_last_digit(text: str, end: int) -> str | None:
    """``text`` with its last digit before ``end`` replaced by (d + 1) % 10; None if there is none."""
    digits = list(_DIGIT.finditer(text, 0, end))
    if not digits:
        return None
    i = digits[-1].start()
    return text[:i] + str((int(text[i]) + 1) % 10) + text[i + 1 :]


def change_last_digit(answer: str) -> str | None:
    """The answer with the last digit of its value changed (see the module docstring); None without digits.

    ``"52_8"`` -> ``"52_9"``, ``"\\frac{1}{10}"`` -> ``"\\frac{1}{11}"``,
    ``"864 \\mbox{ inches}^2"`` -> ``"865 \\mbox{ inches}^2"``, ``"0.9"`` -> ``"0.0"``.
    """
    unit = _UNIT.search(answer)
    if unit is not None:
        before_unit = _bump_last_digit(answer, unit.start())
        if before_unit is not None:
            return before_unit
    return _bump_last_digit(answer, len(answer))


@dataclass
class CheckReport:
    """Outcome of the check; failures are (id, answer, compared text, reward reason)."""

    items: int = 0
    positive_ok: int = 0
    negative_items: int = 0
    negative_ok: int = 0
    positive_failures: list[tuple[str, str, str, str]] = field(default_factory=list)
    negative_failures: list[tuple[str, str, str, str]] = field(default_factory=list)
    unit_digit_changes: list[tuple[str, str, str, str]] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def positive_rate(self) -> float:
        return self.positive_ok / self.items if self.items else 0.0

    @property
    def negative_rate(self) -> float:
        return self.negative_ok / self.negative_items if self.negative_items else 0.0

    @property
    def passed(self) -> bool:
        return self.positive_rate >= THRESHOLD and self.negative_rate >= THRESHOLD


def check(records: list[dict], source: str = "math500") -> CheckReport:
    """Run the positive and negative check on MATH-style records."""
    started = time.perf_counter()
    report = CheckReport()
    for problem in math_problems(records, source):
        report.items += 1
        reference = problem.solution or ""
        result = score_math(reference, problem.answer)
        if result.score == 1.0:
            report.positive_ok += 1
        else:
            report.positive_failures.append((problem.id, problem.answer, result.extracted or "", result.reason))

        changed = change_last_digit(problem.answer)
        if changed is None:
            continue
        report.negative_items += 1
        result = score_math(f"\\boxed{{{changed}}}", problem.answer)
        if result.score == 0.0:
            report.negative_ok += 1
        else:
            report.negative_failures.append((problem.id, problem.answer, changed, result.reason))
        if _UNIT.search(problem.answer):
            unit_only = _bump_last_digit(problem.answer, len(problem.answer))
            if unit_only is not None and unit_only != changed and score_math(f"\\boxed{{{unit_only}}}", problem.answer).score:
                report.unit_digit_changes.append((problem.id, problem.answer, unit_only, "correct"))
    report.seconds = time.perf_counter() - started
    return report


def format_report(report: CheckReport) -> str:
    lines = [
        f"MATH-500 verifier check: {report.items} items in {report.seconds:.1f} s",
        f"positive (reference solution's box verifies): {report.positive_ok}/{report.items} = {100 * report.positive_rate:.1f}%",
        f"negative (changed last digit is rejected):    {report.negative_ok}/{report.negative_items} = "
        f"{100 * report.negative_rate:.1f}% ({report.items - report.negative_items} items without a digit skipped)",
    ]
    sections = [
        ("positive failures", report.positive_failures),
        ("negative failures (changed answer still accepted)", report.negative_failures),
        ("unit digit changes, accepted by design (units are ignored)", report.unit_digit_changes),
    ]
    for title, rows in sections:
        if rows:
            lines.append(f"{title}:")
            lines += [f"  {uid}: answer {answer!r} vs {other!r} -> {reason}" for uid, answer, other, reason in rows]
    lines.append("PASS" if report.passed else f"FAIL (need {100 * THRESHOLD:.0f}% on both)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("path", nargs="?", default=str(DEFAULT_PATH), help="MATH-500 JSONL file")
    args = parser.parse_args(argv)
    try:
        records = load_records(args.path)
        report = check(records.rows, records.source)
    except UserError as exc:
        print(f"check_math500: error: {exc}", file=sys.stderr)
        return 2
    print(format_report(report))
    return 0 if report.passed else 1


if __name__ == "__main__":
    sys.exit(main())
