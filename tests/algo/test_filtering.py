"""Gradient filtering on hand-worked groups."""

import torch

from dashrl.algo.advantages import group_advantages
from dashrl.algo.filtering import keep_mask


def test_tau_zero_drops_exactly_the_uniform_groups():
    # groups: [1,1,1,1] all right, [0,0,0,0] all wrong, [1,0,0,0] mixed
    rewards = torch.tensor([1.0, 1, 1, 1, 0, 0, 0, 0, 1, 0, 0, 0])
    adv = group_advantages(rewards, 4, scale_by_std=True)
    assert keep_mask(adv, 0.0).tolist() == [False] * 8 + [True] * 4


def test_tau_threshold_and_off():
    adv = torch.tensor([0.75, -0.25, -0.25, -0.25])
    assert keep_mask(adv, 0.3).tolist() == [True, False, False, False]  # |-0.25| <= 0.3
    assert keep_mask(adv, 0.25).tolist() == [True, False, False, False]  # <= is dropped
    assert keep_mask(adv, None).all()
