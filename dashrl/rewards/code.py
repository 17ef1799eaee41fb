"""Code reward: take the completion's code, run it with the problem's tests in the sandbox.

``extract_code`` takes the last fenced block marked ``python``, ``py``,
``python3`` or unmarked (blocks in other languages are skipped). A fence is a
line of three or more backticks, optionally indented (the block is then
dedented); a block closes at a line of at least as many backticks, or at a
code line ending in them. An unclosed last block (the completion was
cut off) runs to the end of the text. With no fence at all, the whole
completion counts as code when it parses as Python and defines a function or
class; otherwise there is no code.

``score_code`` runs the code, then the test program, through
``dashrl.rewards.sandbox.run_tests``, which splits the tests into cases (each
top-level ``assert``, each unittest test method; a program with neither is
one case) and reports each one behind a per-run nonce, so an early exit is
never a pass. The score is 1 when every case passed and the harness finished,
else 0; with ``partial=True`` it is the fraction of cases passed (a run that
did not finish scores at most (cases - 1) / cases). The reason is one of

    passed        every case passed
    failed        the tests ran and a case (or a test statement) failed
    error         the code raised before the tests (at import / definition time)
    exited        the code exited (sys.exit, os._exit) before the tests finished
    timeout       wall-clock or CPU-time limit
    memory        a MemoryError (the address-space limit)
    output_limit  stdout or stderr passed the limit
    crashed       killed by a signal (segfault, abort)
    no_code       no code found in the completion
    syntax_error  the code does not compile (found here, without starting the sandbox)
    sandbox_error the sandbox could not run it (a warning says why)

``score_code_batch`` scores many completions in parallel, at most ``workers``
sandboxes at a time (default: one per CPU core), and runs each distinct
(code, tests) pair once: group sampling often repeats a completion, and the
programs are assumed deterministic. Model output never raises; a test program
that does not parse, or a problem without tests, is a data error (UserError).
"""

from __future__ import annotations

import __future__
import ast
import os
import re
import textwrap
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

from dashrl.errors import UserError
from dashrl.rewards.result import RewardResult
from dashrl.rewards.sandbox import SandboxLimits, TestRun, isolation_mode, plan_tests, run_tests

if TYPE_CHECKING:
    from dashrl.tasks.base import Problem

PYTHON_FENCES = ("python", "py", "python3", "py3", "")

_FENCE_OPEN = re.compile(r"^[ \t]*(`{3,})[ \t]*([^\s`]*)[^`]*$")
_FENCE_CLOSE = re.compile(r"^(.*?)[ \t]*(`{3,})[ \t]*$")


def _fenced_blocks(text: str) -> list[tuple[str, str]]:
    """(language, code) of every fenced block in order; an unclosed last block runs to the end."""
    blocks: list[tuple[str, str]] = []
    language: str | None = None
    fence = ""
    body: list[str] = []
    for line in text.splitlines():
        if language is None:
            opening = _FENCE_OPEN.match(line)
            if opening:
                language, fence, body = opening.group(2).lower(), opening.group(1), []
            continue
        closing = _FENCE_CLOSE.match(line)
        if closing and len(closing.group(2)) >= len(fence):
            if closing.group(1).strip():
                body.append(closing.group(1))  # code``` on one line
            blocks.append((language, "\n".join(body)))
            language = None
        else:
            body.append(line)
    if language is not None:
        blocks.append((language, "\n".join(body)))
    return blocks


def _defines_something(text: str) -> bool:
    try:
        module = ast.parse(text)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return False
    return any(isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) for node in module.body)


def extract_code(text: str) -> str | None:
    """The code of the last Python (or unmarked) fenced block; see the module docstring for the fallbacks."""
    python_blocks = [textwrap.dedent(code) for language, code in _fenced_blocks(text) if language in PYTHON_FENCES]
    if python_blocks:
        code = python_blocks[-1]
    elif "```" not in text and _defines_something(text):
        code = text
    else:
        return None
    return code.rstrip() + "\n" if code.strip() else None


def _compiles(code: str) -> bool:
    """Same flags as the harness (postponed annotations); compiling never runs the code."""
    try:
        compile(code, "<completion>", "exec", flags=__future__.annotations.compiler_flag, dont_inherit=True)
    except (SyntaxError, ValueError, OverflowError, RecursionError, MemoryError):
        return False
    return True


def _prepare(completion: str) -> str | RewardResult:
    """The code to run, or the result when there is nothing to run."""
    code = extract_code(completion)
    if code is None:
        return RewardResult(0.0, "no_code")
    if not _compiles(code):
        return RewardResult(0.0, "syntax_error", code)
    return code


def _reason(run: TestRun) -> str:
    ending = run.sandbox.reason
    if run.all_passed:
        return "passed"
    if ending in ("timeout", "cpu_limit"):
        return "timeout"
    if ending in ("output_limit", "sandbox_error"):
        return ending
    if "MemoryError" in run.exceptions:
        return "memory"
    if "SystemExit" in run.exceptions:
        return "exited"
    if run.error_in is not None:
        return "error" if run.error_in == "solution" else "failed"
    if not run.finished:
        return "crashed" if ending == "signal" else "exited"
    return "failed"


def reward_from_run(run: TestRun, code: str, partial: bool = False) -> RewardResult:
    """The reward of a finished sandbox run (see the module docstring for score and reasons)."""
    if not partial:
        return RewardResult(1.0 if run.all_passed else 0.0, _reason(run), code)
    passed = run.passed if run.finished else min(run.passed, run.cases - 1)
    return RewardResult(passed / run.cases, _reason(run), code)


def _check_tests(tests: str, where: str) -> None:
    try:
        plan_tests(tests)
    except (SyntaxError, ValueError) as exc:
        line = f" line {exc.lineno}" if isinstance(exc, SyntaxError) and exc.lineno else ""
        raise UserError(f"{where}: the test program does not parse ({type(exc).__name__}{line}: "
                        f"{getattr(exc, 'msg', exc)})") from None


def _run(code: str, tests: str, limits: SandboxLimits) -> TestRun | None:
    try:
        return run_tests(code, tests, limits)
    except OSError as exc:  # the machine, not the model: e.g. no process could be started
        warnings.warn(f"dashrl code sandbox failed to run a program: {exc}", RuntimeWarning, stacklevel=2)
        return None


def score_code_batch(completions: Sequence[str], tests_list: Sequence[str], *, limits: SandboxLimits | None = None,
                     workers: int | None = None, partial: bool = False,
                     where: Sequence[str] | None = None) -> list[RewardResult]:
    """Score ``completions[i]`` against the test program ``tests_list[i]``, in parallel sandboxes.

    ``where[i]`` names each test program in data-error messages (default "tests[i]").
    """
    if len(completions) != len(tests_list):
        raise ValueError(f"{len(completions)} completions but {len(tests_list)} test programs")
    limits = limits or SandboxLimits()
    prepared = [_prepare(completion) for completion in completions]
    jobs: dict[tuple[str, str], TestRun | None] = {}
    for i, (code, tests) in enumerate(zip(prepared, tests_list)):
        if isinstance(code, str) and (code, tests) not in jobs:
            _check_tests(tests, where[i] if where else f"tests[{i}]")
            jobs[(code, tests)] = None
    if jobs:
        isolation_mode()  # a machine that cannot sandbox at all raises here, once
        pool = ThreadPoolExecutor(max_workers=min(workers or os.cpu_count() or 1, len(jobs)))
        try:
            jobs = dict(zip(jobs, pool.map(lambda key: _run(*key, limits), jobs)))
        finally:  # on Ctrl-C, let the running sandboxes end (each within its timeout) and drop the rest
            pool.shutdown(wait=True, cancel_futures=True)
    results = []
    for code, tests in zip(prepared, tests_list):
        if isinstance(code, RewardResult):
            results.append(code)
        else:
            run = jobs[(code, tests)]
            results.append(RewardResult(0.0, "sandbox_error", code) if run is None
                           else reward_from_run(run, code, partial))
    return results


def score_code(completion: str, tests: str, *, limits: SandboxLimits | None = None,
               partial: bool = False) -> RewardResult:
    """Score one completion against one test program (see the module docstring)."""
    return score_code_batch([completion], [tests], limits=limits, workers=1, partial=partial)[0]


@dataclass(frozen=True)
class CodeVerifier:
    """Scores completions of code problems by running ``problem.tests`` after the completion's code.

    limits:  the sandbox's limits (default SandboxLimits())
    partial: score the fraction of test cases passed instead of all-or-nothing
    workers: sandboxes run at once by score_batch (default: one per CPU core)
    """

    limits: SandboxLimits | None = None
    partial: bool = False
    workers: int | None = None

    def score(self, completion: str, problem: Problem) -> RewardResult:
        return self.score_batch([completion], [problem])[0]

    def score_batch(self, completions: Sequence[str], problems: Sequence[Problem]) -> list[RewardResult]:
        for problem in problems:
            if problem.tests is None:
                raise UserError(f"problem {problem.id}: no tests; the code verifier runs problem.tests")
        return score_code_batch(completions, [p.tests or "" for p in problems], limits=self.limits,
                                workers=self.workers, partial=self.partial,
                                where=[f"problem {p.id}" for p in problems])
