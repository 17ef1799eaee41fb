"""Engine selection: rollout.* validation, a missing vLLM as a one-line error, HF engine log-probs."""

import importlib.util

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from dashrl.cli import main
from dashrl.config import ConfigError, load_config
from dashrl.rollout.engine import SamplingParams
from dashrl.rollout.hf_engine import HFEngine
from dashrl.train.batch import Sample, collate
from dashrl.train.trainer import completion_logprobs


@pytest.mark.parametrize("overrides, message", [
    (["rollout.engine=sglang"], "rollout.engine"),
    (["rollout.lora_sync=adapter"], "need rollout.engine=vllm"),
    (["rollout.sleep_mode=true"], "need rollout.engine=vllm"),
    (["rollout.engine=vllm", "rollout.lora_sync=adapter"], "needs model.lora.enabled"),
    (["rollout.is_cap=0.5"], "rollout.is_cap"),
    (["rollout.is_correction=seq"], "rollout.is_correction"),
])
def test_bad_rollout_settings_are_one_line_errors(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(overrides=overrides)


def test_vllm_engine_without_vllm_exits_2_before_writing(tiny_model_dir, tmp_path, monkeypatch, capsys):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "vllm" else real(name, *a))
    run = tmp_path / "run"
    assert main(["train", f"model.path={tiny_model_dir}", f"log.run_dir={run}", "rollout.engine=vllm"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("dashrl: error: rollout.engine=vllm needs vLLM") and "\n" not in err
    assert not run.exists()


@pytest.mark.parametrize("temperature", [0.6, 1.0])
def test_hf_engine_log_probs_equal_the_trainers(tiny_model_dir, temperature):
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    groups = HFEngine(model, tokenizer).generate(["1+1=", "22+33="], 3, SamplingParams(temperature=temperature,
                                                                                        max_new_tokens=8))
    completions = [c for g in groups for c in g]
    assert all(len(c.logprobs) == len(c.token_ids) for c in completions)
    mb = collate([Sample("p", c.prompt_ids, c.token_ids, 0.0, 0.0, engine_logp=torch.tensor(c.logprobs))
                  for c in completions], tokenizer.pad_token_id)
    with torch.no_grad():
        logp = completion_logprobs(model, mb, temperature)
    assert ((logp - mb.engine_logp).abs() * mb.completion_mask).max() < 1e-5
