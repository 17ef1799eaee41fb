"""Token log-probs, the clipped policy-gradient loss, KL estimators, aggregation.

Shapes: B rows (completions), T completion positions. ``mask`` is 1 on real
completion tokens and 0 on padding.

Aggregation is split in two so that it is exact under gradient accumulation
whatever the schedule: each micro-batch backpropagates ``loss_numerator``, and
the trainer divides the accumulated gradient once by ``step_normalizer`` before
the optimizer step (needed for "dapo", whose token count is only known when the
last micro-batch of the step has been sampled).
"""

from __future__ import annotations

from typing import Literal

import torch

LossAgg = Literal["grpo", "bnpo", "dr_grpo", "dapo"]
KLEstimator = Literal["k1", "k2", "k3"]


def token_logprobs(logits: torch.Tensor, tokens: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """log p(token) under softmax(logits / temperature).

    logits: (B, T, V) scores that predict ``tokens`` (already shifted); tokens: (B, T) -> (B, T).
    """
    logits = logits.float() / temperature
    picked = logits.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)
    return picked - torch.logsumexp(logits, dim=-1)


def policy_gradient_loss(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    advantages: torch.Tensor,
    clip_eps_low: float | None = None,
    clip_eps_high: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token loss -min(ratio * A, clip(ratio) * A), and where clipping was active.

    logp, old_logp: (B, T); advantages: (B,). Without clipping the loss is
    -ratio * A, whose gradient at ratio = 1 (old_logp = logp.detach()) is
    REINFORCE's -A * grad log p.
    Returns (per_token_loss (B, T), clipped (B, T) bool).
    """
    ratio = torch.exp(logp - old_logp)
    adv = advantages.unsqueeze(1)  # (B, 1)
    unclipped = ratio * adv
    if clip_eps_low is None:
        return -unclipped, torch.zeros_like(unclipped, dtype=torch.bool)
    high = clip_eps_low if clip_eps_high is None else clip_eps_high
    clipped = torch.clamp(ratio, 1 - clip_eps_low, 1 + high) * adv
    return -torch.minimum(unclipped, clipped), clipped < unclipped


def kl_penalty(logp: torch.Tensor, ref_logp: torch.Tensor, estimator: KLEstimator) -> torch.Tensor:
    """Per-token estimate of KL(policy || reference) from samples of the policy; (B, T).

    With d = ref_logp - logp:  k1 = -d,  k2 = d^2 / 2,  k3 = exp(d) - d - 1 (Schulman's).
    """
    d = ref_logp - logp
    if estimator == "k1":
        return -d
    if estimator == "k2":
        return 0.5 * d**2
    if estimator == "k3":
        return torch.exp(d) - d - 1
    raise ValueError(f"unknown KL estimator {estimator!r}")


def loss_numerator(per_token_loss: torch.Tensor, mask: torch.Tensor, mode: LossAgg) -> torch.Tensor:
    """A micro-batch's share of the step loss, before division by ``step_normalizer``.

    grpo: sum over rows of each row's token mean;  bnpo: the micro-batch's token mean;
    dr_grpo and dapo: sum over all tokens.
    """
    masked = per_token_loss * mask
    if mode == "grpo":
        return (masked.sum(dim=1) / mask.sum(dim=1).clamp(min=1)).sum()
    if mode == "bnpo":
        return masked.sum() / mask.sum().clamp(min=1)
    if mode in ("dr_grpo", "dapo"):
        return masked.sum()
    raise ValueError(f"unknown loss aggregation {mode!r}")


def step_normalizer(mode: LossAgg, rows: int, tokens: int, micro_batches: int, max_completion_length: int) -> float:
    """What the summed numerators of one optimizer step are divided by.

    grpo: rows (mean over sequences);  bnpo: micro-batches (mean of micro-batch means);
    dr_grpo: rows x max_completion_length (a constant, length-unbiased);  dapo: tokens.
    """
    value = {
        "grpo": rows,
        "bnpo": micro_batches,
        "dr_grpo": rows * max_completion_length,
        "dapo": tokens,
    }[mode]
    return float(max(value, 1))
