"""Procedural multi-step arithmetic with step-by-step reference solutions.

A problem is an expression such as ``7+8*3-5``. The reference solution rewrites
the expression one operation at a time (multiplications first, then left to
right) and ends in ``\\boxed{answer}``::

    Compute 7+8*3-5.
    7+8*3-5
    =7+24-5
    =31-5
    =26
    \\boxed{26}

Every step is local, so a tiny transformer can learn it; more operators or
larger operands make a harder (out-of-distribution) variant.
"""

from __future__ import annotations

import random
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


def make_problem(rng: random.Random, spec: ArithmeticSpec, pid: str) -> Problem:
    while True:  # rejection-sample until every intermediate value is in range
        n_ops = rng.randint(spec.min_ops, spec.max_ops)
        tokens: list = [rng.randint(1, spec.max_operand)]
        for _ in range(n_ops):
            tokens += [rng.choice(spec.ops), rng.randint(1, spec.max_operand)]
        steps, values = solve(tokens)
        if all(0 <= v <= spec.max_value for v in values):
            break
    value = values[-1]
    solution = "\n".join(steps) + f"\n\\boxed{{{value}}}"
    return Problem(
        id=pid,
        prompt=f"Compute {_render(tokens)}.\n",
        answer=str(value),
        solution=solution,
    )


def generate(n: int, seed: int, spec: ArithmeticSpec = ArithmeticSpec(), prefix: str = "arith") -> list[Problem]:
    """``n`` problems drawn with ``seed``; the same arguments give the same list."""
    rng = random.Random(seed)
    return [make_problem(rng, spec, f"{prefix}-{seed}-{i}") for i in range(n)]
