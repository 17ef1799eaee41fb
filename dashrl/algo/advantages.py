"""Group-relative advantages (GRPO): each completion is compared with its group.

Rewards arrive flat and group-contiguous: completions 0..G-1 belong to prompt 0,
G..2G-1 to prompt 1, and so on.
"""

from __future__ import annotations

import torch


def group_advantages(rewards: torch.Tensor, group_size: int, scale_by_std: bool, eps: float = 1e-4) -> torch.Tensor:
    """A = r - mean(group), optionally / (std(group) + eps).

    rewards: (num_groups * group_size,) -> advantages of the same shape.
    std is the sample standard deviation (Bessel-corrected), as in TRL's GRPO.
    """
    if rewards.ndim != 1 or rewards.numel() % group_size:
        raise ValueError(f"rewards of shape {tuple(rewards.shape)} do not split into groups of {group_size}")
    grouped = rewards.float().view(-1, group_size)  # (groups, G)
    centered = grouped - grouped.mean(dim=1, keepdim=True)
    if scale_by_std:
        centered = centered / (grouped.std(dim=1, keepdim=True) + eps)
    return centered.view(-1)
