"""Tests for the math reward: extraction (box and ####), normalization, cheap and symbolic comparison,
the time limit, scoring, and the MATH-500 done-when check."""

from __future__ import annotations

import logging
import signal
import threading
import time
from pathlib import Path

import pytest

import dashrl.rewards.math as math_reward
from dashrl.rewards.math import (
    SymbolicTimeout,
    _to_number,
    answers_match,
    compare_answers,
    extract_boxed,
    extract_final_answer,
    extract_hash_answer,
    normalize_answer,
    reference_final_answer,
    run_with_time_limit,
    score_math,
)
from dashrl.rewards.result import RewardResult

MATH500 = Path(__file__).resolve().parents[3] / "shared" / "data" / "math500_test.jsonl"
REASONS = {"correct", "wrong_answer", "timeout", "no_box", "empty"}


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
        ("12.0", "12"),  # not both integers: float comparison, 12.0 == 12
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
        ("100000000000000000001", "100000000000000000000"),  # integers compare exactly (as floats both are 1e20)
        (".0000673", ".0000672"),  # relative error 1.5e-2; math-verify alone rounds both to 0.000067
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
        "\\boxed{10^{100000}}",
        "\\boxed{" + "(" * 300 + "1" + ")" * 300 + "}",
        "\\boxed{" + "+".join(["x"] * 150) + "}",
        "\\boxed{\\begin{pmatrix}}",
        "\\boxed{\\int_0^\\infty e^{-x^2} dx}",
        "\\boxed{1e999}",
        "#### " + "9" * 100_000,
        "#### \\frac{",
        "####",
    ],
)
def test_score_never_raises(completion: str) -> None:
    started = time.perf_counter()
    result = score_math(completion, "12")
    assert 0.0 <= result.score <= 1.0
    assert result.reason in REASONS
    assert time.perf_counter() - started < math_reward.SYMBOLIC_TIMEOUT_S + 1.0


# ------------------------------------------------------- GSM8K "####" answers


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("48/2 = 24\n48+24 = 72\n#### 72", "72"),
        ("#### 1,234", "1,234"),
        ("so\n  ####72 \n\n", "72"),  # the last non-blank line, indented
        ("#### 1\n#### 2", "2"),
        ("####", ""),
        ("#### Step 1\nadd the numbers", None),  # a Markdown heading, not the last line
        ("no marker here", None),
    ],
)
def test_extract_hash_answer(text: str, expected: str | None) -> None:
    assert extract_hash_answer(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (r"so \boxed{5}" + "\n#### 72", "72"),  # a final #### line wins
        ("#### 72\n" + r"I mean \boxed{5}", "5"),  # #### not on the last line: the box
        ("#### Step 1\n" + r"so \boxed{5}" + "\n#### Check\nit fits", "5"),  # headings are not answers
        (r"only \boxed{5}", "5"),
        ("only\n#### 72", "72"),
        ("nothing", None),
    ],
)
def test_extract_final_answer_takes_the_later_form(text: str, expected: str | None) -> None:
    assert extract_final_answer(text) == expected


def test_reference_final_answer() -> None:
    assert reference_final_answer("Natalia sold 24 + 48 = 72 clips.\n#### 72") == "72"
    assert reference_final_answer(r"\frac{1}{2}") == r"\frac{1}{2}"


def test_score_gsm8k_completion_and_reference() -> None:
    reference = "She sold 600 + 400 = 1,000 cups.\n#### 1,000"
    assert score_math("600+400 = 1000\n#### 1,000", reference) == RewardResult(1.0, "correct", "1,000")
    assert score_math(r"so $\boxed{1000}$.", reference) == RewardResult(1.0, "correct", "1000")
    assert score_math("#### 999", reference) == RewardResult(0.0, "wrong_answer", "999")
    assert score_math("####\n", reference) == RewardResult(0.0, "empty", "")


# ------------------------------------------------------ symbolic and structured


@pytest.mark.parametrize(
    ("pred", "ref"),
    [
        (r"\sqrt{4}", "2"),
        ("2^{10}", "1024"),  # powers are not unevaluated arithmetic
        ("10^{-6}", "0.000001"),  # a '-' after '{' is a sign, not a subtraction
        ("1+x", "x+1"),
        (r"\sqrt{3}/2", r"\frac{\sqrt{3}}{2}"),
        (r"\frac{\sqrt3}{2}", r"\frac{\sqrt{3}}{2}"),
        (r"\sqrt{18}", r"3\sqrt{2}"),
        (r"\frac12", "0.5"),
        (r"\left[ 1, 2 \right)", "[1,2)"),  # interval
        (r"\{2,1\}", r"\{1,2\}"),  # sets are unordered
        (r"\left( 3, \frac{\pi}{2} \right)", r"(3,\frac{\pi}{2})"),  # tuple
        (r"\begin{pmatrix} 1 \\ 2 \end{pmatrix}", r"\begin{pmatrix}1\\2\end{pmatrix}"),
        ("x=5", "5"),
        ("5 cm", "5"),  # units are ignored
        (r"50\%", "50"),
        (r"$\text{(C)}$", "C"),
        ("52_{8}", "52_8"),  # bases: the same digits and base
        ("52", "52_8"),  # the base may be left out
    ],
)
def test_symbolic_and_structured_matches(pred: str, ref: str) -> None:
    assert compare_answers(pred, ref) == "correct"


@pytest.mark.parametrize(
    ("pred", "ref"),
    [
        (r"\sqrt{5}", "2"),
        ("x-1", "x+1"),
        (r"\frac{\sqrt{2}}{2}", r"\frac{\sqrt{3}}{2}"),
        ("(1,2]", "[1,2)"),
        ("(2,1)", "(1,2)"),  # tuples are ordered
        (r"\frac{\pi}{3}", r"\frac{\pi}{2}"),
        ("52_9", "52_8"),  # math-verify alone reads both as 52
        ("42", "52_8"),  # the value in base 10 is not the base-8 answer
        ("52_8", "52"),
        ("y", "x"),
        # Unevaluated arithmetic for a numeric reference: math-verify would evaluate these to the
        # reference, so a model copying the question (or stopping a step early) would be rewarded.
        ("7+8*3-5", "26"),
        ("31-5", "26"),
        (r"13 \cdot 2", "26"),
        (r"(20+6)", "26"),
        (r"52 \div 2", "26"),
    ],
)
def test_symbolic_and_structured_mismatches(pred: str, ref: str) -> None:
    assert compare_answers(pred, ref) == "wrong_answer"


def test_score_symbolic_through_a_box() -> None:
    completion = r"so the height is $\boxed{\dfrac{\sqrt{12}}{4}}$."
    assert score_math(completion, r"\frac{\sqrt{3}}{2}") == RewardResult(1.0, "correct", r"\dfrac{\sqrt{12}}{4}")


def test_overlong_answers_skip_the_symbolic_step() -> None:
    pad = "+0" * math_reward.SYMBOLIC_MAX_CHARS
    assert compare_answers(r"\sqrt{4}", "2") == "correct"
    assert compare_answers(r"\sqrt{4}" + pad, "2") == "wrong_answer"


def test_math_verify_errors_count_as_wrong(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(pred: str, ref: str) -> bool:
        raise RuntimeError("sympy blew up")

    monkeypatch.setattr(math_reward, "_math_verify", broken)
    assert compare_answers(r"\sqrt{4}", "2") == "wrong_answer"
    assert compare_answers("2", "2.0") == "correct"  # cheap checks never reach math-verify


# ------------------------------------------------------------------ time limit


def _spin(seconds: float) -> str:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        pass
    return "finished"


def test_time_limit_interrupts_and_restores_the_handler() -> None:
    previous = signal.getsignal(signal.SIGALRM)
    started = time.monotonic()
    with pytest.raises(SymbolicTimeout):
        run_with_time_limit(lambda: _spin(5.0), 0.05)
    assert time.monotonic() - started < 1.0
    assert signal.getsignal(signal.SIGALRM) is previous
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)


def test_time_limit_returns_the_result_in_time() -> None:
    assert run_with_time_limit(lambda: _spin(0.01), 1.0) == "finished"
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)


def test_time_limit_keeps_an_outer_timer() -> None:
    fired = []
    previous = signal.signal(signal.SIGALRM, lambda signum, frame: fired.append(signum))
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.3)
        # Ours would last 5 s but never outlasts the outer 0.3 s timer: it fires at 0.3 s ...
        with pytest.raises(SymbolicTimeout):
            run_with_time_limit(lambda: _spin(5.0), 5.0)
        # ... and the outer timer is re-armed (1 microsecond left), so its handler still runs.
        _spin(0.05)
        assert fired == [signal.SIGALRM]

        signal.setitimer(signal.ITIMER_REAL, 10.0)
        run_with_time_limit(lambda: _spin(0.01), 1.0)
        remaining, _ = signal.getitimer(signal.ITIMER_REAL)
        assert 9.0 < remaining <= 10.0  # 10 s minus the ~0.01 s spent inside
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def test_huge_expression_times_out_not_hangs() -> None:
    # 10^(10^10) has 10^10 digits: sympy would work on it for minutes.
    started = time.perf_counter()
    assert compare_answers(r"10^{10^{10}}", "12", timeout_s=0.2) == "timeout"
    assert time.perf_counter() - started < 1.5


def test_score_reports_timeout() -> None:
    started = time.perf_counter()
    assert score_math(r"\boxed{(10^{9})!}", "12") == RewardResult(0.0, "timeout", r"(10^{9})!")
    assert time.perf_counter() - started < math_reward.SYMBOLIC_TIMEOUT_S + 1.0


def test_off_main_thread_skips_only_the_symbolic_step(caplog: pytest.LogCaptureFixture) -> None:
    results: list[str] = []

    def work() -> None:
        results.append(compare_answers(r"\sqrt{4}", "2"))  # symbolic: skipped, so not shown equal
        results.append(compare_answers("0.5", r"\frac{1}{2}"))  # cheap numeric check still applies

    math_reward._warned_off_main_thread = False
    with caplog.at_level(logging.WARNING, logger="dashrl.rewards.math"):
        thread = threading.Thread(target=work)
        thread.start()
        thread.join()
    assert results == ["wrong_answer", "correct"]
    assert "off the main thread" in caplog.text


# ------------------------------------------------- MATH-500 done-when check


@pytest.mark.parametrize(
    ("answer", "changed"),
    [
        ("52_8", "52_9"),
        (r"\frac{1}{10}", r"\frac{1}{11}"),
        ("0.9", "0.0"),  # 9 -> (9 + 1) % 10 = 0
        ("x^2", "x^3"),
        (r"864 \mbox{ inches}^2", r"865 \mbox{ inches}^2"),  # the value's digit, not the unit's exponent
        (r"\text{June 20}", r"\text{June 21}"),  # no digit before the text: the last digit anywhere
        (r"\text{(C)}", None),
    ],
)
def test_change_last_digit(answer: str, changed: str | None) -> None:
    from benchmarks.check_math500 import change_last_digit

    assert change_last_digit(answer) == changed


@pytest.mark.skipif(not MATH500.is_file(), reason=f"MATH-500 data not found at {MATH500}")
def test_math500_references_verify_and_changed_answers_do_not() -> None:
    from benchmarks.check_math500 import check
    from dashrl.tasks.records import load_records

    records = load_records(str(MATH500))
    report = check(records.rows, records.source)
    assert report.items == 500
    assert report.positive_rate >= 0.99, report.positive_failures
    assert report.negative_rate >= 0.99, report.negative_failures


def test_symbolic_off_decides_by_the_cheap_checks_alone():
    # math-verify accepts \\sqrt{144} for 12; with symbolic=False only strings and numbers count
    assert score_math("\\boxed{\\sqrt{144}}", "12").reason == "correct"
    assert score_math("\\boxed{\\sqrt{144}}", "12", symbolic=False).reason == "wrong_answer"
    assert score_math("\\boxed{12.0}", "12", symbolic=False).reason == "correct"
    assert score_math("\\boxed{ab}", "12", symbolic=False).reason == "wrong_answer"
