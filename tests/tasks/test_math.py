"""Tests for the MATH and GSM8K record converters and the boxed-instruction template."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dashrl.errors import UserError
from dashrl.rewards.math import score_math
from dashrl.tasks.base import Problem
from dashrl.tasks.math import (
    BOXED_INSTRUCTION_TEMPLATE,
    gsm8k_final_answer,
    gsm8k_problems,
    gsm8k_solution,
    math_problems,
)
from dashrl.tasks.prompts import apply_template

MATH500 = Path(__file__).resolve().parents[3] / "shared" / "data" / "math500_test.jsonl"

GSM8K_RECORD = {
    "question": "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. "
                "How many clips did Natalia sell altogether in April and May?",
    "answer": "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\n"
              "Natalia sold 48+24 = <<48+24=72>>72 clips altogether in April and May.\n#### 72",
}


# ------------------------------------------------------------------------ MATH


def test_math_record_with_all_fields() -> None:
    record = {"problem": "What is $1+1$?", "solution": r"$1+1=\boxed{2}$.", "answer": "2",
              "unique_id": "test/algebra/1.json", "level": 1}
    assert math_problems([record], "math.jsonl") == [
        Problem(id="test/algebra/1.json", prompt="What is $1+1$?", answer="2", solution=r"$1+1=\boxed{2}$.")]


def test_math_answer_taken_from_the_solution_box() -> None:
    record = {"problem": "Half of 1?", "solution": r"It is $\boxed{\frac{1}{2}}$."}
    (problem,) = math_problems([record], "train.jsonl")
    assert problem.answer == r"\frac{1}{2}"
    assert problem.id == "train.jsonl:1"  # no unique_id: SOURCE:LINE


def test_math_custom_fields_and_numeric_answer() -> None:
    records = [{"q": "2*3?", "final": 6, "key": "a"}, {"q": "2*4?", "final": 8, "key": "b"}]
    problems = math_problems(records, "mine.jsonl", {"prompt": "q", "answer": "final", "id": "key"})
    assert [(p.id, p.prompt, p.answer, p.solution) for p in problems] == [("a", "2*3?", "6", None), ("b", "2*4?", "8", None)]


@pytest.mark.parametrize(
    ("records", "message"),
    [
        ([{"problem": "a", "answer": "1"}, {"answer": "2"}], "math.jsonl line 2: missing field 'problem'"),
        ([{"problem": "a", "answer": "1"}, {"problem": "b", "answer": "2"}, {"problem": "c"}],
         "math.jsonl line 3: missing field 'answer' (and no 'solution' to take a boxed answer from)"),
        ([{"problem": "a", "solution": "it is 3"}],
         "math.jsonl line 1: missing field 'answer', and field 'solution' has no \\boxed{} answer"),
        ([{"problem": "a", "answer": "  "}], "math.jsonl line 1: field 'answer' is empty"),
        ([{"problem": "", "answer": "1"}], "math.jsonl line 1: field 'problem' is empty"),
        ([{"problem": "a", "answer": None}], "math.jsonl line 1: missing field 'answer'"),
        (["not a dict"], "math.jsonl line 1: expected a JSON object, got str"),
    ],
)
def test_math_bad_records_name_source_line_and_field(records: list, message: str) -> None:
    with pytest.raises(UserError) as error:
        math_problems(records, "math.jsonl")
    assert str(error.value).startswith(message)


def test_math_renamed_field_is_named_in_the_error() -> None:
    with pytest.raises(UserError, match=r"^x\.jsonl line 1: missing field 'question'$"):
        math_problems([{"problem": "a", "answer": "1"}], "x.jsonl", {"prompt": "question"})


def test_unknown_field_name_is_rejected() -> None:
    with pytest.raises(UserError, match=r"unknown field name\(s\) promt in fields \(known: id, prompt, answer, solution\)"):
        math_problems([{"problem": "a", "answer": "1"}], "x.jsonl", {"promt": "q"})


@pytest.mark.skipif(not MATH500.is_file(), reason=f"MATH-500 data not found at {MATH500}")
def test_math500_converts() -> None:
    records = [json.loads(line) for line in MATH500.read_text().splitlines()]
    problems = math_problems(records, str(MATH500))
    assert len(problems) == 500
    assert len({p.id for p in problems}) == 500
    assert problems[0].id == "test/precalculus/807.json"
    assert problems[0].answer == r"\left( 3, \frac{\pi}{2} \right)"
    assert problems[0].prompt.startswith("Convert the point $(0,3)$")


# ----------------------------------------------------------------------- GSM8K


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("so 72.\n#### 72", "72"),
        ("#### 1,234,567", "1234567"),
        ("#### -5", "-5"),
        ("#### 0.25 ", "0.25"),
        ("no final line", None),
        ("reasoning\n####  ", None),
    ],
)
def test_gsm8k_final_answer(text: str, expected: str | None) -> None:
    assert gsm8k_final_answer(text) == expected


def test_gsm8k_record() -> None:
    (problem,) = gsm8k_problems([GSM8K_RECORD], "gsm8k.jsonl")
    assert problem == Problem(
        id="gsm8k.jsonl:1",
        prompt=GSM8K_RECORD["question"],
        answer="72",
        solution="Natalia sold 48/2 = 24 clips in May.\n"
                 "Natalia sold 48+24 = 72 clips altogether in April and May.\n"
                 "The answer is $\\boxed{72}$.",
    )
    # The SFT target earns full reward from the same verifier.
    assert score_math(problem.solution, problem.answer).score == 1.0


def test_gsm8k_solution_drops_commas_in_the_box() -> None:
    assert gsm8k_solution("600+400 = 1,000 cups\n#### 1,000", "1000") == "600+400 = 1,000 cups\nThe answer is $\\boxed{1000}$."
    assert gsm8k_solution("#### 7", "7") == "The answer is $\\boxed{7}$."


@pytest.mark.parametrize(
    ("records", "message"),
    [
        ([GSM8K_RECORD, {"answer": "#### 1"}], "g.jsonl line 2: missing field 'question'"),
        ([GSM8K_RECORD, GSM8K_RECORD, {"question": "q"}], "g.jsonl line 3: missing field 'answer'"),
        ([{"question": "q", "answer": "it is 5"}], "g.jsonl line 1: field 'answer' does not end in '#### <final answer>'"),
        ([{"question": "q", "answer": "it is\n#### "}], "g.jsonl line 1: field 'answer' does not end in '#### <final answer>'"),
    ],
)
def test_gsm8k_bad_records_name_source_line_and_field(records: list, message: str) -> None:
    with pytest.raises(UserError) as error:
        gsm8k_problems(records, "g.jsonl")
    assert str(error.value) == message


def test_gsm8k_custom_fields() -> None:
    record = {"q": "1+1?", "a": "1+1=2\n#### 2", "uid": "g-7"}
    (problem,) = gsm8k_problems([record], "g.jsonl", {"prompt": "q", "answer": "a", "id": "uid"})
    assert (problem.id, problem.prompt, problem.answer) == ("g-7", "1+1?", "2")


# -------------------------------------------------------------------- prompt


def test_boxed_instruction_template() -> None:
    text = apply_template(BOXED_INSTRUCTION_TEMPLATE, "What is $1+1$?")
    assert text == "What is $1+1$?\n\nPlease reason step by step, and put your final answer within \\boxed{}."
