"""Tests for the code task converters: HumanEval, MBPP-style records and BigCodeBench records -> Problems."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dashrl.errors import UserError
from dashrl.rewards.code import extract_code
from dashrl.tasks.code import (
    ANSWER_FORMAT,
    bigcodebench_problems,
    fenced,
    humaneval_context,
    humaneval_problems,
    mbpp_problems,
)

BIGCODEBENCH = Path(__file__).resolve().parents[3] / "shared" / "data" / "bigcodebench_subset.jsonl"

MBPP_RECORD = {
    "task_id": 2,
    "text": "Write a function to find the shared elements from the given two lists.",
    "code": "def similar_elements(a, b):\r\n    return tuple(sorted(set(a) & set(b)))",
    "test_list": ["assert similar_elements((3, 4, 5, 6), (5, 7, 4, 10)) == (4, 5)",
                  "assert similar_elements((1, 2, 3, 4), (5, 4, 3, 7)) == (3, 4)"],
    "test_setup_code": "",
    "challenge_test_list": [],
}


# ------------------------------------------------------------------ HumanEval


def test_humaneval_has_164_problems_in_task_order() -> None:
    problems = humaneval_problems()
    assert len(problems) == 164
    assert [p.id for p in problems[:2]] == ["HumanEval/0", "HumanEval/1"]
    assert len({p.id for p in problems}) == 164


def test_humaneval_problem_fields() -> None:
    problem = humaneval_problems()[0]  # has_close_elements, with `from typing import List`
    assert problem.answer == ""
    assert problem.prompt.startswith("Complete the following Python function.")
    assert "def has_close_elements(numbers: List[float], threshold: float) -> bool:" in problem.prompt
    # the reference is the whole function in a python block: what extract_code reads back
    code = extract_code(problem.solution)
    assert code.startswith("from typing import List\n") and "return False" in code
    # tests: the prompt's import, the original check, and the call
    assert problem.tests.startswith("from typing import List\n")
    assert "def check(candidate):" in problem.tests
    assert problem.tests.rstrip().endswith("check(has_close_elements)")
    assert "def has_close_elements" not in problem.tests


def test_humaneval_context_keeps_helpers_and_constants_but_not_the_entry_point() -> None:
    prompt = ('import math\n\nFIX = """doc"""\n\ndef helper(x):\n    return x\n\n\n'
              'def target(y):\n    """Do it."""\n')
    assert humaneval_context(prompt, "target") == 'import math\n\nFIX = """doc"""\n\ndef helper(x):\n    return x'


# ------------------------------------------------------------------ MBPP


def test_mbpp_record_becomes_a_problem() -> None:
    (problem,) = mbpp_problems([MBPP_RECORD], "mbpp.jsonl")
    assert problem.id == "2"
    assert problem.prompt == (
        "Write a function to find the shared elements from the given two lists.\n"
        "Your code should pass these tests:\n\n"
        "assert similar_elements((3, 4, 5, 6), (5, 7, 4, 10)) == (4, 5)\n"
        "assert similar_elements((1, 2, 3, 4), (5, 4, 3, 7)) == (3, 4)\n\n" + ANSWER_FORMAT)
    assert problem.tests == "\n".join(MBPP_RECORD["test_list"]) + "\n"
    # \r\n from the original dataset is normalized
    assert problem.solution == ("```python\ndef similar_elements(a, b):\n"
                                "    return tuple(sorted(set(a) & set(b)))\n```\n")
    assert problem.answer == ""


def test_mbpp_setup_code_and_sanitized_field_names() -> None:
    sanitized = {"task_id": 7, "prompt": "Square a number.", "code": "import math\ndef sq(x):\n    return x * x",
                 "test_imports": ["import math"], "test_list": ["assert sq(3) == 9"]}
    (problem,) = mbpp_problems([sanitized], "sanitized.jsonl")
    assert problem.prompt.startswith("Square a number.\nYour code should pass these tests:")
    assert problem.tests == "import math\nassert sq(3) == 9\n"


def test_mbpp_fields_rename_keys_and_ids_default_to_source_line() -> None:
    record = {"question": "Double it.", "checks": "assert double(2) == 4"}
    (problem,) = mbpp_problems([record], "mine.jsonl", {"prompt": "question", "tests": "checks"})
    assert (problem.id, problem.tests, problem.solution) == ("mine.jsonl:1", "assert double(2) == 4\n", None)


@pytest.mark.parametrize(
    ("record", "fields", "message"),
    [
        ({"text": "x"}, None, "mbpp.jsonl line 2: missing field 'test_list'"),
        ({"test_list": ["assert True"]}, None, "mbpp.jsonl line 2: missing field 'text'"),
        # an explicit prompt key has no "prompt" fallback
        ({"prompt": "x", "test_list": ["assert True"]}, {"prompt": "text"}, "mbpp.jsonl line 2: missing field 'text'"),
        ({"text": "x", "test_list": [1, 2]}, None, "line 2: field 'test_list' must be a string or a list of strings"),
        ({"text": "x", "test_list": ["assert (1"]}, None, "mbpp.jsonl line 2: the test program does not parse"),
        ({"text": "x", "test_list": ["assert True"]}, {"answer": "y"}, "unknown field name"),
    ],
)
def test_mbpp_bad_records_say_where(record: dict, fields: dict | None, message: str) -> None:
    with pytest.raises(UserError, match=message.replace("(", r"\(")):
        mbpp_problems([MBPP_RECORD, record], "mbpp.jsonl", fields)


# ------------------------------------------------------------------ BigCodeBench


def test_bigcodebench_subset_becomes_problems() -> None:
    if not BIGCODEBENCH.exists():
        pytest.skip(f"{BIGCODEBENCH} is absent (CI has ../shared beside the repository)")
    with BIGCODEBENCH.open() as handle:
        records = [json.loads(line) for line in handle]
    problems = bigcodebench_problems(records, "bigcodebench_subset.jsonl")
    assert len(problems) == 148
    first = problems[0]
    assert first.id == records[0]["task_id"]
    assert first.prompt == records[0]["instruct_prompt"].strip() + "\n\n" + ANSWER_FORMAT
    assert first.tests == records[0]["test"] and "unittest" in first.tests
    reference = records[0]["code_prompt"] + records[0]["canonical_solution"]
    assert extract_code(first.solution) == reference.rstrip() + "\n"


def test_bigcodebench_missing_field_says_where() -> None:
    record = {"task_id": "BigCodeBench/0", "instruct_prompt": "x", "code_prompt": "def f():\n",
              "canonical_solution": "    pass\n"}
    with pytest.raises(UserError, match="bcb.jsonl line 1: missing field 'test'"):
        bigcodebench_problems([record], "bcb.jsonl")


def test_fenced_ends_with_one_newline() -> None:
    assert fenced("\nx = 1\n\n") == "```python\nx = 1\n```\n"
