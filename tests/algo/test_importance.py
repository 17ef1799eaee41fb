"""Truncated importance sampling and the mismatch statistics, against numbers worked by hand."""

import math

import pytest
import torch

from dashrl.algo.importance import mismatch_sums, truncated_is_weights

# one row of 3 tokens, the third padding; log-ratios d = train - engine = [ln 3, ln 0.5, (pad)]
TRAIN = torch.tensor([[math.log(0.6), math.log(0.1), 0.0]])
ENGINE = torch.tensor([[math.log(0.2), math.log(0.2), -5.0]])
MASK = torch.tensor([[1.0, 1.0, 0.0]])


def test_token_level_weights_are_ratios_capped_at_c():
    # ratios 0.6 / 0.2 = 3 (capped to 2) and 0.1 / 0.2 = 0.5; padding gets 1
    w = truncated_is_weights(TRAIN, ENGINE, MASK, cap=2.0, level="token")
    assert torch.allclose(w, torch.tensor([[2.0, 0.5, 1.0]]), atol=1e-6)


def test_sequence_level_weight_is_the_product_capped():
    # product 3 x 0.5 = 1.5 < 2: every position of the row gets 1.5; with C = 1.2 it is capped
    assert torch.allclose(truncated_is_weights(TRAIN, ENGINE, MASK, 2.0, "sequence"), torch.full((1, 3), 1.5), atol=1e-6)
    assert torch.allclose(truncated_is_weights(TRAIN, ENGINE, MASK, 1.2, "sequence"), torch.full((1, 3), 1.2), atol=1e-6)


@pytest.mark.parametrize("level", ["token", "sequence"])
def test_weights_are_one_when_the_engine_agrees_and_carry_no_gradient(level):
    logp = torch.log(torch.tensor([[0.3, 0.9, 0.5]])).requires_grad_()
    w = truncated_is_weights(logp, logp.detach(), MASK, 2.0, level)
    assert torch.equal(w, torch.ones_like(w)) and not w.requires_grad


def test_cap_below_one_is_refused():
    with pytest.raises(ValueError):
        truncated_is_weights(TRAIN, ENGINE, MASK, 0.5, "token")


def test_mismatch_sums_by_hand():
    # |d| = [ln 3, ln 2] -> sum 1.7918, max 1.0986; k3 = exp(d) - d - 1 = [3 - ln 3 - 1, 0.5 + ln 2 - 1]
    out = mismatch_sums(TRAIN, ENGINE, MASK)
    assert out["tokens"] == 2
    assert out["abs_sum"] == pytest.approx(math.log(3) + math.log(2), abs=1e-5)
    assert out["abs_max"] == pytest.approx(math.log(3), abs=1e-5)
    assert out["kl_sum"] == pytest.approx((2 - math.log(3)) + (math.log(2) - 0.5), abs=1e-5)
