"""Task names -> task objects."""

from __future__ import annotations

import difflib

from dashrl.errors import UserError
from dashrl.tasks.base import Task


def _testbed(eval_seed: int) -> Task:
    from dashrl.tasks.testbed import ArithmeticTask

    return ArithmeticTask(holdout_seed=eval_seed)


def _testbed_hard(eval_seed: int) -> Task:
    from dashrl.tasks.testbed import HARDER, ArithmeticTask

    return ArithmeticTask(name="testbed-hard", spec=HARDER, holdout_seed=eval_seed)


TASKS = {"testbed": _testbed, "testbed-hard": _testbed_hard}


def get_task(name: str, eval_seed: int = 999) -> Task:
    """The task called ``name``; its training stream excludes the eval set of ``eval_seed``."""
    if name not in TASKS:
        close = difflib.get_close_matches(name, TASKS, n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else f"; known tasks: {', '.join(TASKS)}"
        raise UserError(f"unknown task '{name}'{hint}")
    return TASKS[name](eval_seed)
