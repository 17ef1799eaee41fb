"""The shared HF engine (rollout.hf_share_policy, the default) generates with the policy module itself:
no copy and no sync, eval mode while sampling, LoRA adapters on. For the same seed it gives the same
completions as the isolated copy that receives the weights after every update."""

import pytest
import torch

from dashrl.config import load_config
from dashrl.models.lora import is_lora
from dashrl.rollout.engine import SamplingParams
from dashrl.rewards.result import RewardResult
from dashrl.train.run import prepare

FAST = ["algo.group_size=4", "algo.prompts_per_step=2", "train.micro_batch_size=4", "algo.filter_tau=null",
        "sampling.max_new_tokens=8", "train.lr=0.05", "train.warmup_steps=0"]
LORA = ["model.lora.enabled=true", "model.lora.r=4", "model.lora.alpha=8", "model.lora.dropout=0.5"]


def _parity(text, problem):
    return RewardResult(float(sum(text.encode()) % 2), "parity")  # differs within groups, so weights move


def _trainer(tiny_model_dir, tmp_path, shared, *extra):
    cfg = load_config(overrides=[f"model.path={tiny_model_dir}", f"log.run_dir={tmp_path / str(shared)}", *FAST,
                                 f"rollout.hf_share_policy={str(shared).lower()}", *extra])
    trainer = prepare(cfg, progress=False).trainer
    trainer.task.score = _parity
    return trainer


def _completions(engine, prompts, sampling, seed):
    torch.manual_seed(seed)
    return [[c.token_ids for c in group] for group in engine.generate(prompts, 4, sampling)]


@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora"])
def test_shared_engine_matches_the_copy(tiny_model_dir, tmp_path, lora):
    extra = LORA if lora else []
    shared, copy = (_trainer(tiny_model_dir, tmp_path, s, *extra) for s in (True, False))
    assert shared.engine.model is shared.policy and copy.engine.model is not copy.policy
    assert is_lora(shared.engine.model) == lora  # the PEFT model itself, adapters on
    prompts = [shared.format_prompt(p) for p in shared.task.eval_problems(3, 999)]
    for step in range(2):  # before any update, then after one (the copy got the merged weights)
        for sampling in (SamplingParams(max_new_tokens=8, greedy=True), SamplingParams(max_new_tokens=8)):
            assert _completions(shared.engine, prompts, sampling, 7) == _completions(copy.engine, prompts, sampling, 7)
        assert shared.policy.training  # back in training mode after sampling
        torch.manual_seed(step)
        first = shared.train_step(shared.next_problems())
        torch.manual_seed(step)
        second = copy.train_step(copy.next_problems())
        assert first["reward/mean"] == second["reward/mean"] and first["optimizer/skipped"] == 0.0
        assert "time/weight_sync" not in first and "time/weight_sync" in second  # nothing to sync


def test_shared_engine_samples_without_dropout(tiny_model_dir, tmp_path):
    trainer = _trainer(tiny_model_dir, tmp_path, True, *LORA)
    trainer.train_step(trainer.next_problems())  # B != 0: dropout on the adapter path would change the logits
    prompts = [trainer.format_prompt(p) for p in trainer.task.eval_problems(2, 999)]
    logprobs = []
    for _ in range(2):
        groups = trainer.engine.generate(prompts, 2, SamplingParams(max_new_tokens=8, greedy=True))
        logprobs.append([c.logprobs for g in groups for c in g])
    assert logprobs[0] == logprobs[1]  # deterministic: eval mode, no dropout
    assert trainer.policy.training
