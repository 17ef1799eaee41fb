"""Gradient filtering (DASH): drop samples whose advantage is too small to matter.

A sample with |A| <= tau contributes (almost) nothing to the policy gradient.
With binary rewards and a group baseline, tau = 0 drops exactly the groups whose
completions all got the same reward. The filter runs on advantages alone, before
any forward pass, so policy, old-policy and reference passes are all saved.
(With beta > 0 a dropped sample would still have had a KL gradient; filtering
drops that too, as the paper does.)
"""

from __future__ import annotations

import torch


def keep_mask(advantages: torch.Tensor, tau: float | None) -> torch.Tensor:
    """(N,) bool: True for samples to train on. ``tau=None`` keeps everything."""
    if tau is None:
        return torch.ones_like(advantages, dtype=torch.bool)
    return advantages.abs() > tau
