"""Scored samples and the micro-batches built from them.

A ``Sample`` is one completion after scoring, with its advantage: the contract
between rollout and trainer. A ``MicroBatch`` is the tensors of one
forward/backward pass. Layout of ``input_ids`` (B, P + C): prompts are
left-padded to P, completions right-padded to C, so completion tokens occupy
the last C columns and their logits come from ``logits_to_keep = C + 1``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class Sample:
    """One scored completion.

    prompt_ids / completion_ids: token ids, no padding
    reward:    training reward (task.rewards' weighted sum; the verifier's score by default)
    advantage: group-relative advantage;  correct: the verifier gave full credit
    old_logp:  (completion_len,) log-probs under the policy that sampled it; filled
               on the first update when K > 1 updates reuse the batch
    ref_logp:  (completion_len,) log-probs under the reference model (beta > 0)
    engine_logp: (completion_len,) the engine's own sampling log-probs, when it reports them
    """

    problem_id: str
    prompt_ids: tuple[int, ...]
    completion_ids: tuple[int, ...]
    reward: float
    advantage: float
    finish_reason: str = "stop"
    old_logp: torch.Tensor | None = None
    ref_logp: torch.Tensor | None = None
    engine_logp: torch.Tensor | None = None
    correct: bool = False

    @property
    def num_tokens(self) -> int:
        return len(self.prompt_ids) + len(self.completion_ids)


@dataclass
class MicroBatch:
    """Tensors of one forward/backward pass over B samples.

    input_ids, attention_mask, position_ids: (B, P + C)
    completion_ids, completion_mask: (B, C)
    advantages: (B,)
    old_logp, ref_logp: (B, C) or None when not recorded yet
    engine_logp: (B, C) or None when the engine reported none
    """

    samples: list[Sample]
    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    position_ids: torch.Tensor
    completion_ids: torch.Tensor
    completion_mask: torch.Tensor
    advantages: torch.Tensor
    old_logp: torch.Tensor | None
    ref_logp: torch.Tensor | None
    engine_logp: torch.Tensor | None = None

    @property
    def completion_len(self) -> int:
        return self.completion_ids.shape[1]

    def to(self, device: torch.device | str) -> "MicroBatch":
        moved = {k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in vars(self).items()}
        return MicroBatch(**moved)


def _stack_logp(samples: list[Sample], attr: str, width: int) -> torch.Tensor | None:
    values = [getattr(s, attr) for s in samples]
    if any(v is None for v in values):
        return None
    out = torch.zeros(len(values), width)
    for i, v in enumerate(values):
        out[i, : v.numel()] = v
    return out


def collate(samples: list[Sample], pad_id: int) -> MicroBatch:
    """Pad samples into one MicroBatch (see the module docstring for the layout)."""
    P = max(len(s.prompt_ids) for s in samples)
    C = max(max(len(s.completion_ids) for s in samples), 1)
    B = len(samples)
    input_ids = torch.full((B, P + C), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((B, P + C), dtype=torch.long)
    completion_mask = torch.zeros((B, C), dtype=torch.float32)
    for i, s in enumerate(samples):
        p, c = len(s.prompt_ids), len(s.completion_ids)
        input_ids[i, P - p : P] = torch.tensor(s.prompt_ids)
        input_ids[i, P : P + c] = torch.tensor(s.completion_ids, dtype=torch.long)
        attention_mask[i, P - p : P + c] = 1
        completion_mask[i, :c] = 1
    position_ids = (attention_mask.cumsum(dim=1) - 1).clamp(min=0)
    return MicroBatch(
        samples=samples,
        input_ids=input_ids,
        attention_mask=attention_mask,
        position_ids=position_ids,
        completion_ids=input_ids[:, P:],
        completion_mask=completion_mask,
        advantages=torch.tensor([s.advantage for s in samples], dtype=torch.float32),
        old_logp=_stack_logp(samples, "old_logp", C),
        ref_logp=_stack_logp(samples, "ref_logp", C),
        engine_logp=_stack_logp(samples, "engine_logp", C),
    )


def split_rows(samples: list[Sample], size: int) -> list[list[Sample]]:
    """Consecutive chunks of ``size`` samples (the last may be smaller)."""
    return [samples[i : i + size] for i in range(0, len(samples), size)]


def padded_tokens(samples: list[Sample]) -> int:
    """Tokens a collated micro-batch of ``samples`` occupies, padding included."""
    if not samples:
        return 0
    width = max(len(s.prompt_ids) for s in samples) + max(len(s.completion_ids) for s in samples)
    return len(samples) * width


def pack_by_tokens(samples: list[Sample], budget: int) -> list[list[Sample]]:
    """Micro-batches whose padded size stays within ``budget`` tokens.

    Samples are sorted longest first, so rows of similar length share a batch and
    little compute goes to padding; a batch grows while its padded size fits. A
    sample longer than the budget on its own gets a batch of its own. Every
    sample lands in exactly one batch.
    """
    batches: list[list[Sample]] = []
    current: list[Sample] = []
    for sample in sorted(samples, key=lambda s: (len(s.completion_ids), len(s.prompt_ids)), reverse=True):
        if current and padded_tokens(current + [sample]) > budget:
            batches.append(current)
            current = []
        current.append(sample)
    if current:
        batches.append(current)
    return batches
