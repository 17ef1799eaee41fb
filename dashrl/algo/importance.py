"""The engine/trainer mismatch: how far apart they are, and truncated importance sampling.

The engine that samples (vLLM: other kernels, batch shapes, maybe another
dtype) and the trainer give slightly different probabilities to the same
token, so "on-policy" samples are really drawn from pi_engine, not pi_train.
Per token, with d = logp_train - logp_engine (both at the sampling temperature):

- mismatch: |d|, its mean and max over a step's tokens;
- KL(pi_engine || pi_train) estimated with k3 on the engine's samples:
  exp(d) - d - 1 (>= 0, and 0 when the two agree);
- truncated importance sampling (TIS): the policy-gradient term of each token is
  weighted by min(pi_train / pi_engine, C), per token ("token": min(exp(d), C))
  or per sequence ("sequence": min(exp(sum of d over the completion), C)). The
  weight is a constant (no gradient). With identical engines every weight is 1
  and nothing changes.

Shapes: (B, T) completion positions; ``mask`` is 1 on real tokens, 0 on padding.
"""

from __future__ import annotations

import math
from typing import Literal

import torch

ISLevel = Literal["token", "sequence"]


def truncated_is_weights(train_logp: torch.Tensor, engine_logp: torch.Tensor, mask: torch.Tensor, cap: float,
                         level: ISLevel) -> torch.Tensor:
    """(B, T) weights min(pi_train / pi_engine, cap), per token or per sequence, detached; 1 on padding."""
    if cap < 1:
        raise ValueError(f"the importance-ratio cap must be >= 1, got {cap}")
    log_ratio = (train_logp.detach() - engine_logp) * mask  # 0 on padding
    if level == "token":
        weights = torch.exp(log_ratio.clamp(max=math.log(cap)))
        return torch.where(mask > 0, weights, torch.ones_like(weights))
    if level == "sequence":
        per_row = torch.exp(log_ratio.sum(dim=1, keepdim=True).clamp(max=math.log(cap)))  # (B, 1)
        return per_row.expand_as(log_ratio).clone()
    raise ValueError(f"unknown importance-sampling level {level!r}")


def mismatch_sums(train_logp: torch.Tensor, engine_logp: torch.Tensor, mask: torch.Tensor) -> dict[str, float]:
    """Sums over real tokens: |d| (abs_sum), max |d| (abs_max), k3 KL (kl_sum), and the token count."""
    d = (train_logp.detach().float() - engine_logp.float()) * mask
    kl = (torch.exp(d) - d - 1) * mask
    return {"abs_sum": d.abs().sum().item(), "abs_max": d.abs().max().item() if d.numel() else 0.0,
            "kl_sum": kl.sum().item(), "tokens": mask.sum().item()}
