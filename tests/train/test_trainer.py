"""The trainer's gradient equals plain REINFORCE with the group baseline (clip off, beta 0, K 1),
and K > 1 updates reuse recorded old log-probs."""

import pytest
import torch

from dashrl.algo.losses import step_normalizer
from dashrl.config import load_config
from dashrl.rewards.result import RewardResult
from dashrl.timing import StageTimer
from dashrl.train.batch import Sample, split_rows
from dashrl.train.run import prepare
from dashrl.train.trainer import UpdateStats, generation_rounds


def _setup(tiny_model_dir, tmp_path, *overrides):
    cfg = load_config(overrides=[f"model.path={tiny_model_dir}", f"log.run_dir={tmp_path / 'run'}",
                                 "algo.group_size=2", "algo.prompts_per_step=2", "train.micro_batch_size=2",
                                 "sampling.max_new_tokens=6", *overrides])
    return prepare(cfg, progress=False).trainer


def _parity_reward(text, problem):
    """A reward that differs within groups even for a random model."""
    return RewardResult(float(sum(text.encode()) % 2), "parity")


def _samples():
    # two groups of two, prompts and completions of different lengths (so padding matters)
    return [
        Sample("a", (10, 11, 12), (20, 21, 1), reward=1.0, advantage=1.0),
        Sample("a", (10, 11, 12), (22, 1), reward=0.0, advantage=-1.0),
        Sample("b", (13, 14), (23, 24, 25, 26), reward=1.0, advantage=0.5),
        Sample("b", (13, 14), (27,), reward=0.0, advantage=-0.5),
    ]


def _manual_reinforce_grads(policy, samples):
    """-(1/N) sum_i A_i * mean_t log p(o_it), each sequence run alone without padding."""
    policy.zero_grad()
    total = 0.0
    for s in samples:
        ids = torch.tensor([list(s.prompt_ids) + list(s.completion_ids)])
        logits = policy(input_ids=ids).logits[0]
        P = len(s.prompt_ids)
        logp = torch.log_softmax(logits[P - 1 : -1].float(), dim=-1)
        picked = logp.gather(1, torch.tensor(s.completion_ids)[:, None]).squeeze(1)
        total = total - s.advantage * picked.mean()
    (total / len(samples)).backward()
    grads = [p.grad.clone() for p in policy.parameters()]
    policy.zero_grad()
    return grads


def test_gradient_equals_reinforce_with_group_baseline(tiny_model_dir, tmp_path):
    trainer = _setup(tiny_model_dir, tmp_path)
    samples = _samples()
    expected = _manual_reinforce_grads(trainer.policy, samples)
    stats, timer = UpdateStats(), StageTimer()
    for rows in split_rows(samples, 2):
        trainer._accumulate(rows, first_pass=True, stats=stats, timer=timer)
    norm = step_normalizer("grpo", stats.rows, stats.tokens, stats.micro_batches, 6)
    assert norm == 4  # grpo divides by the number of sequences
    for p, e in zip(trainer.policy.parameters(), expected):
        assert torch.allclose(p.grad / norm, e, atol=1e-6)


def test_k_updates_record_and_reuse_old_logprobs(tiny_model_dir, tmp_path):
    trainer = _setup(tiny_model_dir, tmp_path, "algo.updates_per_batch=3", "algo.clip_eps_low=0.2",
                     "train.lr=0.05", "train.warmup_steps=0", "algo.group_size=4", "rollout.hf_share_policy=false")
    trainer.task.score = _parity_reward
    before = [p.detach().clone() for p in trainer.policy.parameters()]
    metrics = trainer.train_step(trainer.next_problems())
    # three optimizer steps were taken on one sampled batch; the first at ratio 1 (no clipping)
    assert trainer.scheduler.last_epoch == 3
    assert any(not torch.equal(b, p) for b, p in zip(before, trainer.policy.parameters()))
    assert 0.0 <= metrics["clip_frac"] <= 1.0
    # the engine got the new weights
    engine_state = trainer.engine.model.state_dict()
    assert all(torch.equal(engine_state[k], v) for k, v in trainer.policy.state_dict().items())


def test_clipping_becomes_active_on_later_updates(tiny_model_dir, tmp_path):
    trainer = _setup(tiny_model_dir, tmp_path, "algo.updates_per_batch=2", "algo.clip_eps_low=0.0001",
                     "train.lr=0.05", "train.warmup_steps=0")
    samples = _samples()
    stats, timer = UpdateStats(), StageTimer()
    for rows in split_rows(samples, 2):
        trainer._accumulate(rows, first_pass=True, stats=stats, timer=timer)
    assert stats.clipped_tokens == 0  # ratio is exactly 1 on the first pass
    assert all(s.old_logp is not None and s.old_logp.numel() == len(s.completion_ids) for s in samples)
    trainer._optimizer_step(stats, UpdateStats(), timer)
    stats = UpdateStats()
    for rows in split_rows(samples, 2):
        trainer._accumulate(rows, first_pass=False, stats=stats, timer=timer)
    assert stats.clipped_tokens > 0  # the policy moved, so a tiny clip band is hit


def test_reference_model_only_with_beta(tiny_model_dir, tmp_path):
    assert _setup(tiny_model_dir, tmp_path).reference is None
    trainer = _setup(tiny_model_dir, tmp_path, "algo.beta=0.1", "algo.filter_tau=null")
    assert trainer.reference is not None
    metrics = trainer.train_step(trainer.next_problems())
    assert metrics["kl"] >= 0.0 and "time/reference" in metrics


@pytest.mark.parametrize("gen, G, expected", [
    (2, 2, [[(["p0"], 2)], [(["p1"], 2)], [(["p2"], 2)]]),          # one group per engine call
    (4, 2, [[(["p0", "p1"], 2)], [(["p2"], 2)]]),                   # two groups per call
    (1, 2, [[(["p0"], 1), (["p0"], 1)], [(["p1"], 1), (["p1"], 1)], [(["p2"], 1), (["p2"], 1)]]),  # a group spans calls
])
def test_generation_rounds(gen, G, expected):
    assert generation_rounds(["p0", "p1", "p2"], G, gen) == expected


def _uniform_group():
    return [Sample("c", (15, 16), (30, 31, 1), reward=1.0, advantage=0.0),
            Sample("c", (15, 16), (32, 1), reward=1.0, advantage=0.0)]


def _grads_after(trainer, samples, filter_rows):
    """Accumulate like train_step does and return the normalised gradient."""
    stats, dropped, timer = UpdateStats(), UpdateStats(), StageTimer()
    rows = trainer._filter(samples, dropped) if filter_rows else samples
    for chunk in split_rows(rows, 2):
        trainer._accumulate(chunk, first_pass=True, stats=stats, timer=timer)
    norm = step_normalizer(trainer.cfg.algo.loss_agg, stats.rows + dropped.rows, stats.tokens + dropped.tokens,
                           stats.micro_batches + dropped.micro_batches, 6)
    grads = [p.grad.clone() / norm for p in trainer.policy.parameters()]
    trainer.policy.zero_grad()
    return grads, stats


@pytest.mark.parametrize("agg", ["grpo", "dapo", "dr_grpo"])
def test_filtering_with_all_normaliser_leaves_the_gradient_unchanged(tiny_model_dir, tmp_path, agg):
    trainer = _setup(tiny_model_dir, tmp_path, "algo.filter_tau=0.0", f"algo.loss_agg={agg}")
    samples = _samples() + _uniform_group()
    full, _ = _grads_after(trainer, samples, filter_rows=False)
    filtered, stats = _grads_after(trainer, samples, filter_rows=True)
    assert stats.rows == 4  # the uniform group never reached a forward pass
    for f, g in zip(full, filtered):
        assert torch.allclose(f, g, atol=1e-7)


def test_filtering_with_kept_normaliser_divides_by_kept_rows(tiny_model_dir, tmp_path):
    trainer = _setup(tiny_model_dir, tmp_path, "algo.filter_tau=0.0", "algo.filter_normalize=kept")
    samples = _samples() + _uniform_group()
    full, _ = _grads_after(trainer, samples, filter_rows=False)  # grpo: divided by 6 rows
    kept, _ = _grads_after(trainer, samples, filter_rows=True)  # divided by the 4 kept rows
    for f, k in zip(full, kept):
        assert torch.allclose(k, f * 6 / 4, atol=1e-7)


def test_all_filtered_step_is_skipped_cleanly(tiny_model_dir, tmp_path):
    trainer = _setup(tiny_model_dir, tmp_path, "algo.filter_tau=0.0", "train.warmup_steps=0")
    trainer.task.score = lambda text, problem: RewardResult(1.0, "always")  # every group uniform
    before = [p.detach().clone() for p in trainer.policy.parameters()]
    metrics = trainer.train_step(trainer.next_problems())
    assert metrics["optimizer/skipped"] == 1.0 and metrics["filter/dropped_frac"] == 1.0
    assert "time/forward_backward" not in metrics and "time/weight_sync" not in metrics
    assert all(torch.equal(b, p) for b, p in zip(before, trainer.policy.parameters()))
    assert trainer.step == 1 and trainer.scheduler.last_epoch == 1


def test_k_updates_with_preemptive_sampling_use_one_engine_call(tiny_model_dir, tmp_path):
    trainer = _setup(tiny_model_dir, tmp_path, "algo.updates_per_batch=3", "algo.clip_eps_low=0.2",
                     "algo.group_size=4", "algo.prompts_per_step=4", "train.generation_batch_size=16",
                     "train.micro_batch_tokens=64", "algo.filter_tau=0.0", "train.lr=0.05", "train.warmup_steps=0")
    trainer.task.score = _parity_reward
    calls = []
    generate = trainer.engine.generate
    trainer.engine.generate = lambda prompts, n, sampling: calls.append(len(prompts) * n) or generate(prompts, n, sampling)
    before = [p.detach().clone() for p in trainer.policy.parameters()]
    metrics = trainer.train_step(trainer.next_problems())
    assert calls == [16]  # the whole step in one engine call
    assert trainer.scheduler.last_epoch == 3 and metrics["optimizer/skipped"] == 0.0
    assert any(not torch.equal(b, p) for b, p in zip(before, trainer.policy.parameters()))
    assert metrics["tokens/trained"] > 0
