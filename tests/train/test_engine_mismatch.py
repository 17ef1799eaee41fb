"""The trainer/engine mismatch metrics and the truncated importance-sampling correction in the trainer."""

import math

import torch

from dashrl.algo.losses import step_normalizer
from dashrl.timing import StageTimer
from dashrl.train.batch import collate, split_rows
from dashrl.train.trainer import UpdateStats, completion_logprobs
from tests.train.test_trainer import _parity_reward
from tests.train.test_trainer import _samples as _trainer_samples
from tests.train.test_trainer import _setup as _trainer_setup


def _setup(tiny_model_dir, tmp_path, *overrides):
    """test_trainer's setup, sampling at temperature 0.7."""
    return _trainer_setup(tiny_model_dir, tmp_path, "sampling.temperature=0.7", *overrides)


def _samples(trainer, engine_shift=0.0):
    """test_trainer's two groups, with engine log-probs = the trainer's own (at the sampling temperature)
    + ``engine_shift``."""
    samples = _trainer_samples()
    mb = collate(samples, trainer.tokenizer.pad_token_id)
    with torch.no_grad():
        logp = completion_logprobs(trainer.policy, mb, trainer.cfg.sampling.temperature)
    for i, s in enumerate(samples):
        s.engine_logp = logp[i, : len(s.completion_ids)] + engine_shift
    return samples


def _grads(trainer, samples):
    stats, timer = UpdateStats(), StageTimer()
    for rows in split_rows(samples, 2):
        trainer._accumulate(rows, first_pass=True, stats=stats, timer=timer)
    norm = step_normalizer("grpo", stats.rows, stats.tokens, stats.micro_batches, 6)
    grads = [p.grad.clone() / norm for p in trainer.policy.parameters()]
    trainer.policy.zero_grad()
    return grads, stats


def test_hf_engine_steps_log_a_mismatch_of_zero_in_fp32(tiny_model_dir, tmp_path):
    trainer = _setup(tiny_model_dir, tmp_path, "algo.filter_tau=null")
    trainer.task.score = _parity_reward
    metrics = trainer.train_step(trainer.next_problems())
    assert 0 <= metrics["mismatch/abs_mean"] < 1e-5 and metrics["mismatch/abs_max"] < 1e-4
    assert abs(metrics["mismatch/kl"]) < 1e-6


def test_is_correction_changes_nothing_when_the_ratio_is_one(tiny_model_dir, tmp_path):
    plain = _setup(tiny_model_dir, tmp_path)
    corrected = _setup(tiny_model_dir, tmp_path, "rollout.is_correction=token")
    expected, _ = _grads(plain, _samples(plain))
    got, stats = _grads(corrected, _samples(corrected))
    assert stats.mismatch_abs_max < 1e-6
    for e, g in zip(expected, got):
        assert torch.allclose(e, g, atol=1e-7)


def test_is_correction_caps_the_weight_of_tokens_the_engine_underrated(tiny_model_dir, tmp_path):
    # the engine gave every token log-prob 1 lower: pi_train / pi_engine = e = 2.718 > C = 2, so each
    # token's policy-gradient term is doubled (token level), and the mismatch is |d| = 1 everywhere
    plain = _setup(tiny_model_dir, tmp_path)
    corrected = _setup(tiny_model_dir, tmp_path, "rollout.is_correction=token", "rollout.is_cap=2")
    expected, _ = _grads(plain, _samples(plain, engine_shift=-1.0))
    got, stats = _grads(corrected, _samples(corrected, engine_shift=-1.0))
    assert math.isclose(stats.mismatch_abs_sum / stats.mismatch_tokens, 1.0, rel_tol=1e-5)
    assert math.isclose(stats.mismatch_kl_sum / stats.mismatch_tokens, math.e - 2, rel_tol=1e-5)  # e^1 - 1 - 1
    for e, g in zip(expected, got):
        assert torch.allclose(2 * e, g, atol=1e-6)
