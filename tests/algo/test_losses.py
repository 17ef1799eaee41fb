"""Log-probs, clipped PG loss, KL estimators and aggregation against hand-worked numbers."""

import math

import torch

from dashrl.algo.losses import kl_penalty, loss_numerator, policy_gradient_loss, step_normalizer, token_logprobs


def test_token_logprobs_and_temperature():
    # logits [0, ln 3] -> softmax [1/4, 3/4]
    logits = torch.tensor([[[0.0, math.log(3)]]])
    assert torch.allclose(token_logprobs(logits, torch.tensor([[1]])), torch.tensor([[math.log(0.75)]]))
    # at temperature 2, logits [0, 2 ln 3] give the same distribution
    hot = torch.tensor([[[0.0, 2 * math.log(3)]]])
    assert torch.allclose(token_logprobs(hot, torch.tensor([[0]]), temperature=2.0), torch.tensor([[math.log(0.25)]]))


def test_unclipped_loss_is_minus_advantage_at_ratio_one():
    logp = torch.tensor([[-1.0, -2.0]])
    loss, clipped = policy_gradient_loss(logp, logp.clone(), torch.tensor([0.5]))
    assert torch.allclose(loss, torch.tensor([[-0.5, -0.5]]))
    assert not clipped.any()


def test_clipping_cases():
    # ratio exp(0.5) = 1.6487 and exp(-0.5) = 0.6065; eps 0.2 -> band [0.8, 1.2]
    up, down = 0.5, -0.5
    logp = torch.tensor([[up], [up], [down], [down]])
    old = torch.zeros(4, 1)
    adv = torch.tensor([1.0, -1.0, 1.0, -1.0])
    loss, clipped = policy_gradient_loss(logp, old, adv, clip_eps_low=0.2)
    # A=+1, r=1.65: min(1.65, 1.2) = 1.2 (clipped)   A=-1, r=1.65: min(-1.65, -1.2) = -1.65
    # A=+1, r=0.61: min(0.61, 0.8) = 0.61            A=-1, r=0.61: min(-0.61, -0.8) = -0.8 (clipped)
    expected = torch.tensor([[-1.2], [math.exp(0.5)], [-math.exp(-0.5)], [0.8]])
    assert torch.allclose(loss, expected, atol=1e-6)
    assert clipped.squeeze(1).tolist() == [True, False, False, True]


def test_asymmetric_clip_high():
    loss, _ = policy_gradient_loss(torch.tensor([[0.5]]), torch.zeros(1, 1), torch.tensor([1.0]), 0.2, 0.28)
    assert torch.allclose(loss, torch.tensor([[-1.28]]))


def test_kl_estimators():
    # policy p = 0.5, reference q = 0.25: d = ln q - ln p = ln 0.5 = -0.6931
    logp, ref = torch.tensor([[math.log(0.5)]]), torch.tensor([[math.log(0.25)]])
    d = math.log(0.5)
    assert torch.allclose(kl_penalty(logp, ref, "k1"), torch.tensor([[-d]]))  # 0.6931
    assert torch.allclose(kl_penalty(logp, ref, "k2"), torch.tensor([[0.5 * d * d]]))  # 0.2402
    assert torch.allclose(kl_penalty(logp, ref, "k3"), torch.tensor([[0.5 - d - 1]]))  # 0.5 + 0.6931 - 1 = 0.1931
    assert torch.allclose(kl_penalty(ref, ref, "k3"), torch.zeros(1, 1))


LOSS = torch.tensor([[1.0, 2.0, 3.0], [4.0, 9.0, 9.0]])
MASK = torch.tensor([[1.0, 1.0, 1.0], [1.0, 0.0, 0.0]])


def test_numerators():
    # grpo: row means 6/3 + 4/1 = 6; bnpo: 10 tokens-sum / 4 tokens = 2.5; dr_grpo, dapo: 1+2+3+4 = 10
    assert loss_numerator(LOSS, MASK, "grpo").item() == 6.0
    assert loss_numerator(LOSS, MASK, "bnpo").item() == 2.5
    assert loss_numerator(LOSS, MASK, "dr_grpo").item() == 10.0
    assert loss_numerator(LOSS, MASK, "dapo").item() == 10.0


def test_normalizers():
    args = dict(rows=4, tokens=11, micro_batches=2, max_completion_length=5)
    assert step_normalizer("grpo", **args) == 4
    assert step_normalizer("bnpo", **args) == 2
    assert step_normalizer("dr_grpo", **args) == 20
    assert step_normalizer("dapo", **args) == 11


def test_split_aggregation_equals_whole_step():
    # dapo: two micro-batches summed then / all tokens == the token mean of the whole step
    whole = (LOSS * MASK).sum() / MASK.sum()
    parts = sum(loss_numerator(LOSS[i : i + 1], MASK[i : i + 1], "dapo") for i in range(2))
    assert torch.allclose(parts / step_normalizer("dapo", 2, 4, 2, 3), whole)
    # grpo: per-row means averaged, whatever the split
    grpo = sum(loss_numerator(LOSS[i : i + 1], MASK[i : i + 1], "grpo") for i in range(2)) / 2
    assert torch.allclose(grpo, torch.tensor((2.0 + 4.0) / 2))
