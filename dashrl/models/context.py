"""Prompt + completion length against the model's context window, checked when a run or evaluation loads.

A prompt that leaves no room for ``sampling.max_new_tokens`` gets every
completion cut off (pass@1 0, silently), and a huge one can make generation
crawl for minutes. So before anything runs, the longest prompt (the template
alone first, then the evaluation problems and a sample of training problems,
as actually sent to the engine) plus ``max_new_tokens`` must fit the model's
context; otherwise a one-line ``UserError`` says by how much and what to change.

The context is the model config's ``max_position_embeddings`` (or ``n_positions``
/ ``max_sequence_length``); a model that states none is not checked.
"""

from __future__ import annotations

from itertools import islice
from typing import Callable, Iterable

from dashrl.errors import UserError
from dashrl.tasks.base import Problem

TRAIN_SAMPLE = 64  # training problems checked (the stream is endless)


def context_length(model) -> int | None:
    config = getattr(model, "config", None)
    for key in ("max_position_embeddings", "n_positions", "max_sequence_length"):
        value = getattr(config, key, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def check_prompt_lengths(model, tokenizer, format_prompt: Callable[[Problem], str], max_new_tokens: int,
                         problems: Iterable[Problem]) -> None:
    """Raise UserError when a prompt of ``problems`` plus ``max_new_tokens`` exceeds the model's context."""
    context = context_length(model)
    if context is None:
        return
    if max_new_tokens >= context:
        raise UserError(f"sampling.max_new_tokens ({max_new_tokens}) leaves no room for a prompt in the model's "
                        f"context of {context} tokens; lower it")
    room = context - max_new_tokens
    empty = format_prompt(Problem(id="template", prompt="", answer=""))
    n = _length(tokenizer, empty)
    if n > room:
        raise UserError(f"the prompt template alone is {n} tokens; with sampling.max_new_tokens={max_new_tokens} it "
                        f"exceeds the model's context of {context} tokens; shorten task.prompt_template / "
                        "task.system_prompt or lower max_new_tokens")
    for problem in problems:
        n = _length(tokenizer, format_prompt(problem))
        if n > room:
            raise UserError(f"the prompt of problem {problem.id} is {n} tokens; with sampling.max_new_tokens="
                            f"{max_new_tokens} it exceeds the model's context of {context} tokens; shorten "
                            "task.prompt_template or lower max_new_tokens")


def _length(tokenizer, text: str) -> int:
    return len(tokenizer(text)["input_ids"])


def run_problems(task, config) -> list[Problem]:
    """What a run sends: the evaluation problems and the first ``TRAIN_SAMPLE`` training problems."""
    problems = list(task.eval_problems(config.eval.num_problems, config.task.eval_seed))
    try:
        stream = task.train_stream(config.task.train_seed)
    except UserError:
        return problems  # no training problems: the trainer reports it
    return problems + list(islice(stream, TRAIN_SAMPLE))
