"""Tests for the boxed-answer math reward: extraction, normalization, scoring."""

from __future__ import annotations

import pytest

from dashrl.rewards.math import (
    _to_number,
    answers_match,
    extract_boxed,
    normalize_answer,
    score_math,
)
from dashrl.rewards.result import RewardResult


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (r"so \boxed{42}.", "42"),
        (r"\boxed{\frac{1}{2}}", r"\frac{1}{2}"),
        (r"\boxed{\sqrt{\frac{a}{b}}}", r"\sqrt{\frac{a}{b}}"),
        (r"first \boxed{1}, then \boxed{2}", "2"),
        (r"\boxed{1} and finally \fbox{7}", "7"),
        (r"\fbox{x+1}", "x+1"),
        (r"$\boxed 5$", "5"),
        (r"\boxed  -3 apples", "-3"),
        (r"\boxed{\{1,2\}}", r"\{1,2\}"),
        (r"\boxed{ 12 }", " 12 "),
        (r"\boxed{}", ""),
    ],
)
def test_extract_boxed_finds_last_box(text: str, expected: str) -> None:
    assert extract_boxed(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "",
        "the answer is 42",
        r"\boxed{\frac{1}{2}",
        r"\boxed{1} then \boxed{2",
        r"\boxedx",
        "\\boxed",
        "\\boxed   ",
    ],
)
def test_extract_boxed_none_when_missing_or_unbalanced(text: str) -> None:
    assert extract_boxed(text) is None


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (" 12 ", "12"),
        ("$12$", "12"),
        ("12.", "12"),
        ("$12$.", "12"),
        ("+5", "5"),
        ("1,000", "1000"),
        ("-1,234,567.5", "-1234567.5"),
        ("1{,}000", "1000"),
        ("1,2", "1,2"),
        (r"\dfrac{1}{2}", r"\frac{1}{2}"),
        (r"\tfrac{1}{2}", r"\frac{1}{2}"),
        (r"\left( 1, 2 \right)", "(1,2)"),
        (r"\leftarrow", r"\leftarrow"),
        (r"1\!000", "1000"),
        (r"5 \text{ cm}", "5cm"),
        (r"\text{yes}", "yes"),
    ],
)
def test_normalize_answer(raw: str, expected: str) -> None:
    assert normalize_answer(raw) == expected


@pytest.mark.parametrize(
    ("s", "expected"),
    [
        ("12", 12.0),
        ("-3.0", -3.0),
        (".5", 0.5),
        (r"\frac{1}{2}", 0.5),
        (r"-\frac{3}{4}", -0.75),
        ("3/4", 0.75),
        ("-1/8", -0.125),
    ],
)
def test_to_number_parses(s: str, expected: float) -> None:
    assert _to_number(s) == expected


@pytest.mark.parametrize("s", ["", "x", "1/0", r"\frac{1}{0}", "1e5", "nan", "inf", "9" * 400, r"\sqrt{2}"])
def test_to_number_rejects(s: str) -> None:
    assert _to_number(s) is None


@pytest.mark.parametrize(
    ("pred", "ref"),
    [
        (" 12 ", "12"),
        ("1,000", "1000"),
        ("0.5", r"\frac{1}{2}"),
        (r"\dfrac{1}{2}", "1/2"),
        ("-3", "-3.0"),
        ("0.3333333", r"\frac{1}{3}"),  # |0.3333333 - 1/3| / (1/3) = 1e-7 < 1e-6
        (r"\left(1,2\right)", "(1, 2)"),
    ],
)
def test_answers_match(pred: str, ref: str) -> None:
    assert answers_match(pred, ref)


@pytest.mark.parametrize(
    ("pred", "ref"),
    [
        ("13", "12"),
        ("0.333", r"\frac{1}{3}"),  # relative error 1e-3
        ("1,2", "12"),
        (r"\sqrt{4}", "2"),  # no symbolic equivalence yet
        ("5 cm", "5"),
    ],
)
def test_answers_do_not_match(pred: str, ref: str) -> None:
    assert not answers_match(pred, ref)


def test_score_correct() -> None:
    completion = r"3*4 = 12, so the answer is \boxed{ 12 }."
    assert score_math(completion, "12") == RewardResult(1.0, "correct", " 12 ")


def test_score_correct_numeric_form() -> None:
    assert score_math(r"\boxed{\frac{1}{2}}", "0.5") == RewardResult(1.0, "correct", r"\frac{1}{2}")


def test_score_last_box_wins() -> None:
    assert score_math(r"maybe \boxed{12}, no: \boxed{13}", "12") == RewardResult(0.0, "wrong_answer", "13")


def test_score_wrong_answer() -> None:
    assert score_math(r"\boxed{11}", "12") == RewardResult(0.0, "wrong_answer", "11")


def test_score_no_box() -> None:
    assert score_math("the answer is 12", "12") == RewardResult(0.0, "no_box")


def test_score_unbalanced_box_is_no_box() -> None:
    assert score_math(r"\boxed{12", "12") == RewardResult(0.0, "no_box")


def test_score_empty_box() -> None:
    assert score_math(r"\boxed{ $ $ }", "12") == RewardResult(0.0, "empty", " $ $ ")


@pytest.mark.parametrize(
    "completion",
    [
        "",
        "}}}{{{\\boxed{{{",
        "\\boxed{" * 10_000,
        "\\boxed{" + "{" * 50_000 + "}" * 50_000 + "}",
        "x" * 1_000_000 + "\\boxed{1}",
        "\\boxed{" + "9" * 5_000 + "}",
        "\\boxed{1/" + "0" * 400 + "}",
        "答案是 \\boxed{١٢} 🎉",
        "\\boxed{\x00\ud800}",
        "\\boxed{\\frac{1}{0}}",
        "$$$...$$$\\boxed{$.$}",
        "\\",
        "\\boxed{\\}",
    ],
)
def test_score_never_raises(completion: str) -> None:
    result = score_math(completion, "12")
    assert 0.0 <= result.score <= 1.0
    assert result.reason in {"correct", "wrong_answer", "no_box", "empty"}
