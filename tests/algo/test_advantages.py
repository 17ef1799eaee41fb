"""Group advantages against hand-worked numbers."""

import math

import pytest
import torch

from dashrl.algo.advantages import group_advantages


def test_centered_only():
    rewards = torch.tensor([1.0, 0, 0, 0, 1, 1, 0, 0])
    # group 1: mean 0.25 -> [0.75, -0.25, -0.25, -0.25]; group 2: mean 0.5 -> [0.5, 0.5, -0.5, -0.5]
    expected = torch.tensor([0.75, -0.25, -0.25, -0.25, 0.5, 0.5, -0.5, -0.5])
    assert torch.allclose(group_advantages(rewards, 4, scale_by_std=False), expected)


def test_scaled_by_sample_std():
    rewards = torch.tensor([1.0, 0, 0, 0, 1, 1, 0, 0])
    # group 1: sample std = sqrt((0.75^2 + 3 * 0.25^2) / 3) = sqrt(0.25) = 0.5 -> [1.5, -0.5, -0.5, -0.5]
    # group 2: sample std = sqrt(4 * 0.25 / 3) = 0.57735 -> +-0.5 / 0.57735 = +-0.86603
    s = 0.5 / math.sqrt(1 / 3)
    expected = torch.tensor([1.5, -0.5, -0.5, -0.5, s, s, -s, -s])
    assert torch.allclose(group_advantages(rewards, 4, scale_by_std=True, eps=0.0), expected, atol=1e-6)


def test_uniform_group_has_zero_advantage_even_with_std():
    rewards = torch.tensor([1.0, 1, 1, 1, 0, 0, 0, 0])
    assert torch.equal(group_advantages(rewards, 4, scale_by_std=True), torch.zeros(8))


def test_rejects_partial_groups():
    with pytest.raises(ValueError):
        group_advantages(torch.zeros(6), 4, scale_by_std=False)
