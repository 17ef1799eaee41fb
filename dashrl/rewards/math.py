"""Binary reward for math answers given as ``\\boxed{...}``.

The completion's final answer is the content of its last ``\\boxed{...}`` (or
``\\fbox{...}``). It is compared with the reference answer after a light
string normalization, or numerically when both sides are plain numbers.

Simplifications:

* Comparison is purely textual plus simple numbers (integers, decimals,
  ``\\frac{a}{b}`` and ``a/b`` of such numbers). There is no symbolic
  equivalence, so ``\\sqrt{4}`` does not match ``2`` and ``x+1`` does not match
  ``1+x``. ``answers_match`` is the single comparison point; a symbolic checker
  (e.g. the ``math-verify`` package) would be added there.
* Normalization is modest (see ``normalize_answer``): units kept inside
  ``\\text{...}`` stay part of the answer, so ``5\\text{ cm}`` does not match ``5``.
* Only the last box counts; an unbalanced last box gives no answer rather than
  falling back to an earlier box.
"""

from __future__ import annotations

import math
import re

from dashrl.rewards.result import RewardResult

_BOX_COMMANDS = ("\\boxed", "\\fbox")

_TEXT_WRAPPER = re.compile(r"\\text\{([^{}]*)\}")
_LEFT_RIGHT = re.compile(r"\\(?:left|right)(?![a-zA-Z])")
_SPACING = re.compile(r"\\[!,;:]")
_SMALL_FRAC = re.compile(r"\\[dt]frac(?![a-zA-Z])")
_WHITESPACE = re.compile(r"\s+")
_SPACED_ARGUMENT = re.compile(r"\s+([^\s$]+)")
_THOUSANDS = re.compile(r"-?\d{1,3}(?:,\d{3})+(?:\.\d+)?")

_DECIMAL = r"-?(?:\d+(?:\.\d*)?|\.\d+)"
_PLAIN_NUMBER = re.compile(_DECIMAL)
_LATEX_FRAC = re.compile(rf"(-?)\\frac\{{({_DECIMAL})\}}\{{({_DECIMAL})\}}")
_SLASH_FRAC = re.compile(rf"({_DECIMAL})/({_DECIMAL})")


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


def answers_match(pred: str, ref: str, rel_tol: float = 1e-6) -> bool:
    """Whether ``pred`` states the same answer as ``ref``.

    True if the normalized strings are equal, or both parse as numbers within
    ``rel_tol`` of each other. This is the single comparison point of the math
    reward; symbolic equivalence would be added here.
    """
    pred_norm, ref_norm = normalize_answer(pred), normalize_answer(ref)
    if pred_norm == ref_norm:
        return True
    pred_num, ref_num = _to_number(pred_norm), _to_number(ref_norm)
    if pred_num is None or ref_num is None:
        return False
    return math.isclose(pred_num, ref_num, rel_tol=rel_tol)


def score_math(completion: str, reference_answer: str) -> RewardResult:
    """1.0 if the last boxed answer in ``completion`` matches ``reference_answer``.

    Reasons: "no_box" (no usable box), "empty" (box with nothing in it after
    normalization), "correct", "wrong_answer".
    """
    extracted = extract_boxed(completion)
    if extracted is None:
        return RewardResult(0.0, "no_box")
    if normalize_answer(extracted) == "":
        return RewardResult(0.0, "empty", extracted)
    if answers_match(extracted, reference_answer):
        return RewardResult(1.0, "correct", extracted)
    return RewardResult(0.0, "wrong_answer", extracted)
