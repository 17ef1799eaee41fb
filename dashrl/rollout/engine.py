"""The engine contract: what the trainer needs from an inference engine.

An engine owns its own copy of the policy weights. The trainer asks it for
completions and, after every optimizer step, pushes new weights with
``load_weights``. Nothing in the contract assumes the engine shares memory with
the trainer, so an engine can live in another process or be vLLM / SGLang.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

import torch


@dataclass(frozen=True)
class SamplingParams:
    """How to sample. ``greedy`` ignores temperature / top_p / top_k.

    ``lengths`` is for timing runs (``dashrl bench`` with ``bench.completion_tokens``):
    every completion gets a length drawn uniformly from [lo, hi] tokens, EOS
    included, whatever the model would have said (EOS is suppressed before that
    length and forced at it). None = stop at EOS or ``max_new_tokens`` as usual.
    """

    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0  # 0 = off
    max_new_tokens: int = 64
    greedy: bool = False
    lengths: tuple[int, int] | None = None


@dataclass(frozen=True)
class Completion:
    """One sampled completion of one prompt.

    prompt_ids: prompt token ids as the engine tokenized them, (prompt_len,)
    token_ids:  generated ids, EOS included when emitted, no padding, (completion_len,)
    text:       decoded completion without special tokens
    finish_reason: "stop" (EOS emitted) or "length" (hit max_new_tokens)
    logprobs:   log-prob of each generated id under the distribution the engine sampled it from
                (softmax(logits / temperature), after top-k / top-p where the engine applies them;
                greedy: temperature 1), (completion_len,); None if the engine does not report them
    """

    prompt_ids: tuple[int, ...]
    token_ids: tuple[int, ...]
    text: str
    finish_reason: Literal["stop", "length"]
    logprobs: tuple[float, ...] | None = None


def cut_completion(tokenizer, stop_ids, prompt_ids: tuple[int, ...], ids: list[int],
                   logprobs: list[float] | None = None) -> Completion:
    """A completion up to and including its first stop token ("stop"), or all of ``ids`` ("length")."""
    stop = next((i for i, t in enumerate(ids) if t in stop_ids), None)
    ids, reason = (list(ids[: stop + 1]), "stop") if stop is not None else (list(ids), "length")
    return Completion(prompt_ids=prompt_ids, token_ids=tuple(ids), text=tokenizer.decode(ids, skip_special_tokens=True),
                      finish_reason=reason, logprobs=tuple(logprobs[: len(ids)]) if logprobs is not None else None)


class Engine(Protocol):
    def generate(self, prompts: list[str], n: int, sampling: SamplingParams) -> list[list[Completion]]:
        """``n`` completions for each prompt: result[i] is prompt i's group of n."""
        ...

    def load_weights(self, state: dict[str, torch.Tensor]) -> None:
        """Replace the engine's weights with the trainer's (same names and shapes)."""
        ...
