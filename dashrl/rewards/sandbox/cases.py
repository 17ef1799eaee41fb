"""Split a test program into cases: the one piece both sides of the sandbox use.

The parent counts the cases to score a run (``TestRun.cases``); the test harness inside the
sandbox runs them in order and reports each. What a case is (a top-level ``assert``, a ``test*``
method of a ``unittest.TestCase`` subclass, else the whole program) is described under "Test
harness" in the package docstring. Read from the source with ``ast`` only: nothing is imported or
run here. Standard library only, because the parent ships this file into each run beside
``inside.py``.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass


@dataclass(frozen=True)
class TestPlan:
    """A test program split into cases (see "Test harness" in the package docstring).

    steps:    the top-level statements in order, each with its case number, or None for a statement
              that is not a case (setup)
    unittest: (class name, method name) of each unittest case, numbered after the assert cases
    """

    steps: tuple[tuple[ast.stmt, int | None], ...]
    unittest: tuple[tuple[str, str], ...]

    @property
    def explicit_cases(self) -> int:
        return sum(case is not None for _, case in self.steps) + len(self.unittest)

    @property
    def cases(self) -> int:
        """Number of cases; a program with no asserts or unittest tests is one case."""
        return self.explicit_cases or 1


def _is_test_class(base: str, known: dict[str, list[str]]) -> bool:
    return base in known or base.rsplit(".", 1)[-1] in ("TestCase", "IsolatedAsyncioTestCase")


def _is_unittest_main(stmt: ast.stmt) -> bool:
    """A top-level ``unittest.main(...)`` call: skipped, as the harness runs the tests itself."""
    return (isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Call)
            and ast.unparse(stmt.value.func) == "unittest.main")


def plan_tests(tests: str) -> TestPlan:
    """Split a test program into cases; raises SyntaxError when it does not parse."""
    module = ast.parse(tests)
    steps: list[tuple[ast.stmt, int | None]] = []
    classes: dict[str, list[str]] = {}
    for stmt in module.body:
        case = None
        if _is_unittest_main(stmt):
            continue
        if isinstance(stmt, ast.Assert):
            case = sum(c is not None for _, c in steps)
        elif isinstance(stmt, ast.ClassDef):
            bases = [ast.unparse(base) for base in stmt.bases]
            if any(_is_test_class(base, classes) for base in bases):
                functions = (node for node in stmt.body if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)))
                methods = {node.name for node in functions if node.name.startswith("test")}
                for base in bases:
                    methods.update(classes.get(base, []))
                classes[stmt.name] = sorted(methods)  # unittest's loader runs them in name order
        steps.append((stmt, case))
    unittest_cases = tuple((name, method) for name, methods in classes.items() for method in methods)
    return TestPlan(tuple(steps), unittest_cases)
