"""Procedural multi-step arithmetic in two solution styles: step by step and "human-written".

A problem is an expression such as ``7+8*3-5``. Its solution comes in two styles.

Step by step (``step_solution``, the pretraining corpus and the model's own
style): the expression rewritten one operation at a time (multiplications
first, then left to right), ending in ``\\boxed{answer}``::

    Compute 7+8*3-5.
    7+8*3-5
    =7+24-5
    =31-5
    =26
    \\boxed{26}

Every step is local, so a tiny transformer can learn it; more operators or
larger operands make a harder (out-of-distribution) variant.

Human-written (``human_solution``, the task's reference solution ``Problem.solution``,
what SFT-H trains on): what the paper says MATH solutions are to a 0.5B model,
concise, skipping intermediate steps, in varied notation. Each intermediate
line of the step-by-step solution is written with probability 1/2 (the rest are
done "in the head"), the expression is restated with probability 1/2, the
lines are chained on one line or one per line, multiplication is written
``*``, ``\\times``, ``\\cdot`` or ``×``, operators are spaced or not, and the
answer is boxed bare or inside ``$...$``. For example::

    7 \\times 3+8 = 29
    \\boxed{29}

    $\\boxed{26}$

The choices are drawn from a generator seeded by the problem text, so each
problem has one fixed reference solution, as a data set has. The probabilities
were set from that description before any model was trained on them.
"""

from __future__ import annotations

import random
import zlib
from dataclasses import dataclass

from dashrl.tasks.base import Problem


@dataclass(frozen=True)
class ArithmeticSpec:
    """Difficulty of generated problems."""

    min_ops: int = 2  # operators per expression, inclusive range
    max_ops: int = 3
    max_operand: int = 9  # operands are drawn from 1..max_operand
    ops: str = "+-*"
    max_value: int = 19  # every intermediate and final value lies in 0..max_value


def _reduce_once(tokens: list) -> tuple[list, int]:
    """Apply the next operation (the first '*', else the leftmost '+'/'-')."""
    idx = next((i for i, t in enumerate(tokens) if t == "*"), 1)
    a, op, b = tokens[idx - 1], tokens[idx], tokens[idx + 1]
    value = a * b if op == "*" else a + b if op == "+" else a - b
    return tokens[: idx - 1] + [value] + tokens[idx + 2 :], value


def _render(tokens: list) -> str:
    return "".join(str(t) for t in tokens)


def solve(tokens: list) -> tuple[list[str], list[int]]:
    """Return the rewriting steps and the value each step produced."""
    steps, values = [_render(tokens)], []
    while len(tokens) > 1:
        tokens, value = _reduce_once(tokens)
        values.append(value)
        steps.append("=" + _render(tokens))
    return steps, values


MULTIPLY_SIGNS = ("*", "\\times", "\\cdot", "×")  # the notations a human solution uses for '*'
SKIP_STEP = 0.5  # probability that a human solution leaves out one intermediate line
RESTATE = 0.5  # probability that it restates the expression first


def step_solution(tokens: list) -> str:
    """The step-by-step solution: one rewriting per line, then the boxed answer."""
    steps, values = solve(tokens)
    return "\n".join(steps) + f"\n\\boxed{{{values[-1]}}}"


def _render_as(tokens: list, times: str, spaced: bool) -> str:
    """``tokens`` in a notation: the multiplication sign and spacing around operators."""
    parts = [times if t == "*" else str(t) for t in tokens]
    if spaced:
        return " ".join(parts)
    return "".join(p + " " if p.startswith("\\") else p for p in parts)  # '3\\times 4', not '3\\times4'


def human_solution(tokens: list, rng: random.Random) -> str:
    """A concise solution with skipped steps and varied notation (see the module docstring)."""
    expressions = [list(tokens)]
    while len(expressions[-1]) > 1:
        expressions.append(_reduce_once(expressions[-1])[0])
    times, spaced = rng.choice(MULTIPLY_SIGNS), rng.random() < 0.5
    one_line, dollars = rng.random() < 0.5, rng.random() < 0.5
    shown = [expressions[0]] if rng.random() < RESTATE else []
    shown += [e for e in expressions[1:-1] if rng.random() >= SKIP_STEP]
    answer = expressions[-1][0]
    box = f"$\\boxed{{{answer}}}$" if dollars else f"\\boxed{{{answer}}}"
    if not shown:  # every step done in the head: the answer alone
        return box
    lines = [_render_as(e, times, spaced) for e in shown] + [str(answer)]
    return (" = " if one_line else "\n= ").join(lines) + "\n" + box


def style_rng(prompt: str) -> random.Random:
    """The generator of a problem's human solution: seeded by its text, so each problem has one."""
    return random.Random(zlib.crc32(prompt.encode()))


def make_problem(rng: random.Random, spec: ArithmeticSpec, pid: str, style: str = "human") -> Problem:
    """A random problem whose ``solution`` is written in ``style``: 'human' (the reference) or 'steps'."""
    while True:  # rejection-sample until every intermediate value is in range
        n_ops = rng.randint(spec.min_ops, spec.max_ops)
        tokens: list = [rng.randint(1, spec.max_operand)]
        for _ in range(n_ops):
            tokens += [rng.choice(spec.ops), rng.randint(1, spec.max_operand)]
        steps, values = solve(tokens)
        if all(0 <= v <= spec.max_value for v in values):
            break
    prompt = f"Compute {_render(tokens)}.\n"
    solution = step_solution(tokens) if style == "steps" else human_solution(tokens, style_rng(prompt))
    return Problem(id=pid, prompt=prompt, answer=str(values[-1]), solution=solution)


def generate(n: int, seed: int, spec: ArithmeticSpec = ArithmeticSpec(), prefix: str = "arith",
             style: str = "human") -> list[Problem]:
    """``n`` problems drawn with ``seed``; the same arguments give the same list."""
    rng = random.Random(seed)
    return [make_problem(rng, spec, f"{prefix}-{seed}-{i}", style) for i in range(n)]
