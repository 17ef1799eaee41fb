"""Problem -> the exact string sent to the engine: the prompt template, then (optionally) the chat template.

One function, used by training, evaluation and SFT, so a model is always
trained on the prompt format it is evaluated with.

- ``prompt_template``: ``{prompt}`` is replaced by the problem text; every
  other brace stays literal (LaTeX such as ``\\boxed{}`` needs no escaping).
- ``prompt_format=chat``: the templated text becomes a user message (after an
  optional system message) rendered by the tokenizer's chat template with the
  assistant turn opened (``add_generation_prompt``).

Simplification: the engine tokenizes prompt strings with the tokenizer's
special tokens, so when the tokenizer adds a BOS token itself, a BOS that the
chat template already wrote is removed from the string (else it would appear
twice).
"""

from __future__ import annotations

from functools import partial
from typing import Callable

from dashrl.config import TaskConfig
from dashrl.errors import UserError
from dashrl.tasks.base import Problem
from dashrl.tasks.records import first_line

PromptFormatter = Callable[[Problem], str]


def raw_prompt(problem: Problem) -> str:
    """The problem text as is (the default format)."""
    return problem.prompt


def apply_template(template: str, prompt: str) -> str:
    return template.replace("{prompt}", prompt)


def format_prompt(problem: Problem, template: str = "{prompt}", chat_tokenizer=None,
                  system_prompt: str | None = None) -> str:
    """The string for ``problem``: templated, then chat-wrapped when ``chat_tokenizer`` is given."""
    text = apply_template(template, problem.prompt)
    if chat_tokenizer is None:
        return text
    messages = ([{"role": "system", "content": system_prompt}] if system_prompt is not None else [])
    messages.append({"role": "user", "content": text})
    rendered = chat_tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    bos = chat_tokenizer.bos_token
    if bos and rendered.startswith(bos) and _adds_bos(chat_tokenizer):
        rendered = rendered[len(bos):]
    return rendered


def _adds_bos(tokenizer) -> bool:
    ids = tokenizer("a")["input_ids"]
    return bool(ids) and ids[0] == tokenizer.bos_token_id


def prompt_formatter(task: TaskConfig, tokenizer) -> PromptFormatter:
    """The configured formatter, checked once (chat needs a working chat template); raises UserError."""
    if task.prompt_format == "raw":
        if task.prompt_template == "{prompt}":
            return raw_prompt
        return partial(format_prompt, template=task.prompt_template)
    if not getattr(tokenizer, "chat_template", None):
        raise UserError("task.prompt_format=chat, but the model's tokenizer has no chat template "
                        "(use prompt_format=raw for base models)")
    formatter = partial(format_prompt, template=task.prompt_template, chat_tokenizer=tokenizer,
                        system_prompt=task.system_prompt)
    try:
        formatter(Problem(id="check", prompt="1 + 1 = ?", answer="2"))
    except Exception as exc:  # jinja errors, e.g. a template that rejects a system message
        raise UserError(f"the tokenizer's chat template failed: {type(exc).__name__}: {first_line(exc)}") from None
    return formatter
