"""Binary reward for math answers: the final ``\\boxed{...}`` (or ``#### answer``) vs the reference.

Extraction: a completion whose last non-blank line starts with ``####`` (the
GSM8K form, ``... #### 72``) answers with the rest of that line; any other
completion answers with the content of its last ``\\boxed{...}`` /
``\\fbox{...}`` (brace-matched). Only the last line counts for ``####`` so that
Markdown headings (``#### Step 1``) are not read as answers. A reference in the
GSM8K form is reduced to its ``####`` answer the same way.

Comparison (``compare_answers``), cheapest first; the first check that decides wins:

1. Normalized strings equal (``normalize_answer``: ``$``, spaces, ``\\text{}``,
   ``\\left``/``\\right``, ``\\dfrac``, thousands separators) -> correct.
2. Numbers in a base (``52_8``, ``4210_{5}``) on either side: the digits must be
   equal and the prediction's base, if it gives one, must be the reference's.
   Decided here, never passed on: math-verify reads ``52_9`` as ``52``.
3. Both sides plain numbers (integer, decimal, ``\\frac{a}{b}``, ``a/b``):
   integers compare exactly, others within a relative tolerance of 1e-6.
   Decided here too: math-verify rounds to 6 decimals, so it would accept
   ``.0000673`` for ``.0000672``.
4. A numeric reference is never matched by unevaluated arithmetic: a
   prediction made only of numbers and arithmetic signs with a binary ``+``,
   ``-``, ``*``, ``/``, ``\\cdot``, ``\\times`` or ``\\div`` (``7+8*3-5``,
   ``31-5``) is wrong. math-verify would evaluate it, so a model could copy the
   question into the box and collect the reward. Powers and roots still go on
   (``2^{10}`` = ``1024``, ``\\sqrt{4}`` = ``2``).
5. Otherwise symbolic equivalence with the ``math-verify`` package (``\\sqrt{4}``
   = ``2``, ``x+1`` = ``1+x``, intervals, sets, tuples, matrices, equations
   ``x=5`` vs ``5``, units and ``\\%`` dropped). It runs under one time budget
   (``SYMBOLIC_TIMEOUT_S`` for parsing both sides and comparing) enforced by a
   SIGALRM timer that this module arms itself; math-verify's own per-call
   alarms are switched off so they cannot cancel it. A timeout scores 0 with
   reason "timeout"; any error inside math-verify scores 0 as a wrong answer.

Reasons recorded: "correct", "wrong_answer", "timeout", "no_box" (neither a box
nor a final ``####`` line), "empty" (an answer that is blank after normalization).

Simplifications:

* Signals only work in the main thread, so off the main thread the symbolic
  step is skipped (steps 1-4 still apply) and a warning is logged once. The
  trainer and evaluator score in the main thread.
* Answers longer than ``SYMBOLIC_MAX_CHARS`` skip the symbolic step: real final
  answers are short, and this bounds the cost of garbage.
* A signal is delivered between Python bytecodes, so a single long C call in
  sympy could overrun the budget; none of the huge inputs tried
  (``10^{10^{10}}``, ``(10^9)!``, power towers) did.
* Units and percent signs are ignored by the symbolic step, so ``864`` matches
  ``864 \\mbox{ inches}^2`` (and so does ``864 \\mbox{ inches}^3``).
* Only the last answer counts; an unbalanced last box gives no answer rather
  than falling back to an earlier box.
"""

from __future__ import annotations

import logging
import math
import re
import signal
import threading
import time
from typing import Callable, Literal, TypeVar

from dashrl.rewards.result import RewardResult

SYMBOLIC_TIMEOUT_S = 2.0  # whole symbolic check (parse both sides + verify); typical cost is ~10 ms
SYMBOLIC_MAX_CHARS = 400  # longer answers are compared by steps 1-4 only

Verdict = Literal["correct", "wrong_answer", "timeout"]

_log = logging.getLogger(__name__)
_T = TypeVar("_T")

_BOX_COMMANDS = ("\\boxed", "\\fbox")
_HASH_MARK = "####"

_TEXT_WRAPPER = re.compile(r"\\text\{([^{}]*)\}")
_LEFT_RIGHT = re.compile(r"\\(?:left|right)(?![a-zA-Z])")
_SPACING = re.compile(r"\\[!,;:]")
_SMALL_FRAC = re.compile(r"\\[dt]frac(?![a-zA-Z])")
_WHITESPACE = re.compile(r"\s+")
_SPACED_ARGUMENT = re.compile(r"\s+([^\s$]+)")
_THOUSANDS = re.compile(r"-?\d{1,3}(?:,\d{3})+(?:\.\d+)?")

_DECIMAL = r"-?(?:\d+(?:\.\d*)?|\.\d+)"
_INTEGER = re.compile(r"-?\d+")
_PLAIN_NUMBER = re.compile(_DECIMAL)
_LATEX_FRAC = re.compile(rf"(-?)\\frac\{{({_DECIMAL})\}}\{{({_DECIMAL})\}}")
_SLASH_FRAC = re.compile(rf"({_DECIMAL})/({_DECIMAL})")
_BASE_NUMBER = re.compile(r"([0-9A-Z]+)_\{?(\d+)\}?")
_ARITHMETIC_ONLY = re.compile(r"(?:[\d.()\[\]{}^+\-*/]|\\cdot|\\times|\\div)+")
_BINARY_OPERATOR = re.compile(r"[\d.)\]}](?:[+\-*/]|\\cdot|\\times|\\div)")


# ------------------------------------------------------------------ extraction


def _last_box_start(text: str) -> tuple[int, str] | None:
    """Index and command name of the last box command in ``text``, if any."""
    found = [(text.rfind(cmd), cmd) for cmd in _BOX_COMMANDS]
    index, cmd = max(found)
    return None if index < 0 else (index, cmd)


def _braced_content(text: str, open_index: int) -> str | None:
    """Content of the brace group opening at ``text[open_index] == "{"``.

    A backslash escapes the next character, so ``\\{`` and ``\\}`` do not count.
    Returns None when the group never closes.
    """
    depth = 0
    i = open_index
    while i < len(text):
        char = text[i]
        if char == "\\":
            i += 2
            continue
        if char == "{":
            depth += 1
        elif char == "}":
            depth -= 1
            if depth == 0:
                return text[open_index + 1 : i]
        i += 1
    return None


def _spaced_content(text: str, start: int) -> str | None:
    """Argument of the ``\\boxed 5`` form: the run after the spaces, up to whitespace or ``$``."""
    match = _SPACED_ARGUMENT.match(text, start)
    return match.group(1) if match else None


def extract_boxed(text: str) -> str | None:
    """Content of the last ``\\boxed{...}``/``\\fbox{...}`` in ``text``.

    Handles nested braces (``\\boxed{\\frac{1}{2}}`` -> ``\\frac{1}{2}``) and the
    brace-less ``\\boxed 5`` form. Returns None if there is no box, the last box
    is unbalanced, or it is followed by neither a brace nor whitespace.
    """
    found = _last_box_start(text)
    if found is None:
        return None
    index, cmd = found
    after = index + len(cmd)
    if text.startswith("{", after):
        return _braced_content(text, after)
    return _spaced_content(text, after)


def extract_hash_answer(text: str) -> str | None:
    """The GSM8K final answer: the rest of the last non-blank line if it starts with ``####``.

    ``"... so 72 in all.\\n#### 72"`` -> ``"72"``; ``"#### Step 1\\n..."`` -> None.
    """
    stripped = text.rstrip()
    last_line = stripped[stripped.rfind("\n") + 1 :].lstrip()
    if not last_line.startswith(_HASH_MARK):
        return None
    return last_line[len(_HASH_MARK) :].strip()


def extract_final_answer(text: str) -> str | None:
    """The completion's answer: a final ``#### answer`` line, else the last box (None if neither)."""
    hashed = extract_hash_answer(text)
    return hashed if hashed is not None else extract_boxed(text)


def reference_final_answer(reference: str) -> str:
    """The answer to compare with: the part after ``####`` for a GSM8K-style reference, else all of it."""
    hashed = extract_hash_answer(reference)
    return reference if hashed is None else hashed


# --------------------------------------------------------------- normalization


def _strip_ends(s: str) -> str:
    """Repeatedly strip surrounding whitespace and ``$`` and trailing periods."""
    previous = None
    while s != previous:
        previous = s
        s = s.strip().strip("$").rstrip(".")
    return s


def _drop_thousands_separators(s: str) -> str:
    """``1,000`` or ``1{,}000`` -> ``1000``, only when the whole string is such a number."""
    candidate = s.replace("{,}", ",")
    return candidate.replace(",", "") if _THOUSANDS.fullmatch(candidate) else s


def normalize_answer(s: str) -> str:
    """Canonical string form of an answer for exact comparison.

    Steps, in order: strip surrounding whitespace, ``$`` and trailing ``.``;
    replace ``\\text{...}`` by its content; drop ``\\left``/``\\right`` and the
    spacing commands ``\\!``, ``\\,``, ``\\;``, ``\\:``; rewrite
    ``\\dfrac``/``\\tfrac`` as ``\\frac``; remove all whitespace; strip ends
    again; drop one leading ``+``; remove thousands separators from a string
    that is a single number.
    """
    s = _strip_ends(s)
    s = _TEXT_WRAPPER.sub(r"\1", s)
    s = _LEFT_RIGHT.sub("", s)
    s = _SPACING.sub("", s)
    s = _SMALL_FRAC.sub(r"\\frac", s)
    s = _WHITESPACE.sub("", s)
    s = _strip_ends(s)
    s = s.removeprefix("+")
    return _drop_thousands_separators(s)


# -------------------------------------------------------------- cheap checks


def _finite_or_none(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _to_number(s: str) -> float | None:
    """Value of ``s`` if it is a plain number, ``\\frac{a}{b}`` or ``a/b``, else None.

    ``a`` and ``b`` are integers or decimals with an optional minus sign. Zero
    denominators and non-finite results give None. Expects a normalized string
    (no spaces, no leading ``+``).
    """
    try:
        if _PLAIN_NUMBER.fullmatch(s):
            return _finite_or_none(float(s))
        latex = _LATEX_FRAC.fullmatch(s)
        if latex:
            sign = -1.0 if latex.group(1) else 1.0
            return _finite_or_none(sign * float(latex.group(2)) / float(latex.group(3)))
        slash = _SLASH_FRAC.fullmatch(s)
        if slash:
            return _finite_or_none(float(slash.group(1)) / float(slash.group(2)))
    except (ValueError, ZeroDivisionError, OverflowError):
        return None
    return None


def _exact_integer(s: str) -> int | None:
    """``s`` as an int if it is a plain integer of at most 4300 digits (Python's str->int limit)."""
    if not _INTEGER.fullmatch(s):
        return None
    try:
        return int(s)
    except ValueError:
        return None


def _numbers_equal(pred: str, ref: str, rel_tol: float) -> bool | None:
    """Whether two normalized plain numbers are equal; None unless both are numbers.

    Two integers compare exactly (as floats, 10**20 + 1 would equal 10**20);
    anything else compares as floats within ``rel_tol``.
    """
    pred_int, ref_int = _exact_integer(pred), _exact_integer(ref)
    if pred_int is not None and ref_int is not None:
        return pred_int == ref_int
    pred_num, ref_num = _to_number(pred), _to_number(ref)
    if pred_num is None or ref_num is None:
        return None
    return math.isclose(pred_num, ref_num, rel_tol=rel_tol)


def _base_numbers_equal(pred: str, ref: str) -> bool | None:
    """Compare numbers written in a base (``52_8``); None unless one side has a base subscript.

    Equal when the digits are equal and the prediction's base, if it gives one,
    is the reference's: ``52`` and ``52_{8}`` both match ``52_8``; ``52_9`` does not.
    """
    pred_base, ref_base = _BASE_NUMBER.fullmatch(pred), _BASE_NUMBER.fullmatch(ref)
    if pred_base is None and ref_base is None:
        return None
    if ref_base is None:
        return False
    ref_digits, base = ref_base.groups()
    if pred_base is None:
        return pred == ref_digits
    return pred_base.groups() == (ref_digits, base)


def _unevaluated_arithmetic(pred: str, ref: str) -> bool:
    """Whether normalized ``pred`` is arithmetic still to be done (``31-5``) while ``ref`` is a number.

    Binary means after a digit or a closing bracket, so ``-3`` and ``10^{-6}``
    are not unevaluated arithmetic.
    """
    return (_to_number(ref) is not None and _ARITHMETIC_ONLY.fullmatch(pred) is not None
            and _BINARY_OPERATOR.search(pred) is not None)


# ------------------------------------------------------------ symbolic check


class SymbolicTimeout(BaseException):
    """The symbolic check ran out of time.

    A BaseException, like math-verify's own timeout, so that math-verify's
    ``except Exception`` handlers do not swallow it.
    """


class _HideMathVerifyTimeoutWarning(logging.Filter):
    """math-verify warns once that its own timeout is off; here the timeout is ours."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Timeout is disabled" not in record.getMessage()


for _name in ("math_verify.parser", "math_verify.grader"):
    logging.getLogger(_name).addFilter(_HideMathVerifyTimeoutWarning())

_warned_off_main_thread = False


def run_with_time_limit(fn: Callable[[], _T], seconds: float) -> _T:
    """``fn()``, or raise ``SymbolicTimeout`` once ``seconds`` have passed. Main thread only.

    Uses ``ITIMER_REAL``/SIGALRM. A timer already armed by someone else is put
    back afterwards with its remaining time (and ours never outlasts it), and
    the previous SIGALRM handler is restored. A late signal that arrives after
    ``fn`` returned is ignored.
    """
    armed = True

    def expire(signum: int, frame: object) -> None:
        if armed:
            raise SymbolicTimeout

    previous_handler = signal.signal(signal.SIGALRM, expire)
    outer_delay, outer_interval = signal.getitimer(signal.ITIMER_REAL)
    budget = max(min(seconds, outer_delay) if outer_delay > 0 else seconds, 1e-6)  # 0 would disarm
    started = time.monotonic()
    try:
        signal.setitimer(signal.ITIMER_REAL, budget)
        try:
            return fn()
        finally:
            armed = False
            signal.setitimer(signal.ITIMER_REAL, 0)
    finally:
        signal.signal(signal.SIGALRM, previous_handler)
        if outer_delay > 0:
            # Whatever is left of the outer timer, at least a microsecond so it still fires.
            remaining = outer_delay - (time.monotonic() - started)
            signal.setitimer(signal.ITIMER_REAL, max(remaining, 1e-6), outer_interval)


def _math_verify(pred: str, ref: str) -> bool:
    """math-verify's verdict with its own timeouts off (the caller bounds the time).

    Import math-verify (``import math_verify``) before calling this under a time
    limit: an import cut short by the timer would leave sympy half-loaded.
    """
    from math_verify import parse, verify

    gold = parse(f"\\boxed{{{ref}}}", parsing_timeout=None)
    target = parse(f"\\boxed{{{pred}}}", parsing_timeout=None)
    return bool(verify(gold, target, timeout_seconds=None))


def symbolic_equal(pred: str, ref: str, timeout_s: float = SYMBOLIC_TIMEOUT_S) -> bool | None:
    """math-verify's verdict on ``pred`` vs the reference ``ref``; None if it timed out.

    Never raises: an error inside math-verify counts as not equal. Skipped (False)
    for answers longer than ``SYMBOLIC_MAX_CHARS`` and off the main thread.
    """
    global _warned_off_main_thread
    if len(pred) > SYMBOLIC_MAX_CHARS or len(ref) > SYMBOLIC_MAX_CHARS:
        return False
    if threading.current_thread() is not threading.main_thread():
        if not _warned_off_main_thread:
            _log.warning("math reward: symbolic equivalence is skipped off the main thread (it needs SIGALRM)")
            _warned_off_main_thread = True
        return False
    import math_verify  # noqa: F401  (loads sympy once, outside the time limit)

    try:
        return run_with_time_limit(lambda: _math_verify(pred, ref), timeout_s)
    except SymbolicTimeout:
        return None
    except Exception:  # math-verify on model output: any failure is "not shown equal"
        _log.debug("math-verify failed on %.80r vs %.80r", pred, ref, exc_info=True)
        return False


# ------------------------------------------------------------------- scoring


def compare_answers(pred: str, ref: str, rel_tol: float = 1e-6, timeout_s: float = SYMBOLIC_TIMEOUT_S,
                    symbolic: bool = True) -> Verdict:
    """"correct", "wrong_answer" or "timeout" for the answer ``pred`` against the reference ``ref``.

    Runs the checks listed in the module docstring, cheapest first; ``symbolic=False``
    stops before math-verify (for tasks whose answers are plain numbers).
    """
    pred_norm, ref_norm = normalize_answer(pred), normalize_answer(ref)
    if pred_norm == ref_norm:
        return "correct"
    for cheap_verdict in (_base_numbers_equal(pred_norm, ref_norm), _numbers_equal(pred_norm, ref_norm, rel_tol)):
        if cheap_verdict is not None:
            return "correct" if cheap_verdict else "wrong_answer"
    if _unevaluated_arithmetic(pred_norm, ref_norm) or not symbolic:
        return "wrong_answer"
    symbolic = symbolic_equal(pred.strip(), ref.strip(), timeout_s)
    if symbolic is None:
        return "timeout"
    return "correct" if symbolic else "wrong_answer"


def answers_match(pred: str, ref: str, rel_tol: float = 1e-6) -> bool:
    """Whether ``pred`` states the same answer as ``ref`` (see ``compare_answers``)."""
    return compare_answers(pred, ref, rel_tol) == "correct"


def score_math(completion: str, reference_answer: str, symbolic: bool = True) -> RewardResult:
    """1.0 if the final answer of ``completion`` matches ``reference_answer``, else 0.0.

    The final answer is a final ``####`` line or the last box (``extract_final_answer``);
    a GSM8K-style reference is reduced to its ``####`` part. Reasons: "no_box",
    "empty", "correct", "wrong_answer", "timeout". ``symbolic=False`` skips math-verify
    (milliseconds to seconds per wrong answer): right for integer-answer tasks.
    """
    extracted = extract_final_answer(completion)
    if extracted is None:
        return RewardResult(0.0, "no_box")
    return score_math_answer(extracted, reference_answer, symbolic)


def score_math_answer(extracted: str, reference_answer: str, symbolic: bool = True) -> RewardResult:
    """``score_math`` for an answer already extracted (by any answer format): "empty", "correct", ..."""
    if normalize_answer(extracted) == "":
        return RewardResult(0.0, "empty", extracted)
    verdict = compare_answers(extracted, reference_final_answer(reference_answer), symbolic=symbolic)
    return RewardResult(1.0 if verdict == "correct" else 0.0, verdict, extracted)
