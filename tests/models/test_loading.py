"""Model loading: path rules, one-line errors, dtype, and GGUF files (a tiny one, ``tiny_gguf`` in tests/conftest.py).

The GGUF test loads the tiny testbed model as written by conftest's ``write_gguf`` with the ``gguf`` package's
writer (float32 tensors under llama.cpp's names, the byte-level vocabulary as a 'gpt2' tokenizer) and checks
that transformers' GGUF loader, through dashrl, gives back the same logits and token ids, as a plain trainable
model.
"""

import json
import shutil

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from dashrl.cli import main
from dashrl.config import load_config
from dashrl.errors import UserError
from dashrl.models import load_model, load_tokenizer, resolve_model_path, split_gguf
from dashrl.train.run import prepare

FAST = ["algo.group_size=2", "algo.prompts_per_step=2", "train.micro_batch_size=2", "algo.filter_tau=null",
        "sampling.max_new_tokens=6", "eval.num_problems=2", "eval.samples=0"]


# ------------------------------------------------------------------ paths


def test_split_gguf(tiny_gguf):
    assert split_gguf(str(tiny_gguf)) == (str(tiny_gguf.parent), "tiny.gguf")
    assert split_gguf("org/repo/sub/m.gguf") == ("org/repo", "sub/m.gguf")  # not local: a file in a hub repo
    assert split_gguf("org/repo") == ("org/repo", None)


def test_resolve_accepts_directories_gguf_files_and_hub_names(tiny_model_dir, tiny_gguf, monkeypatch):
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub.HfApi, "model_info", lambda self, repo_id, **kw: object())  # the hub says: exists
    assert resolve_model_path(str(tiny_model_dir)) == str(tiny_model_dir)
    assert resolve_model_path(str(tiny_gguf)) == str(tiny_gguf)
    assert resolve_model_path("Qwen/Qwen2.5-0.5B") == "Qwen/Qwen2.5-0.5B"
    assert resolve_model_path("org/repo/model.Q4_K_M.gguf") == "org/repo/model.Q4_K_M.gguf"


@pytest.mark.parametrize("make, message", [
    (lambda d: d / "missing", "model path does not exist: {p}"),
    (lambda d: d / "missing.gguf", "GGUF file does not exist: {p}"),
    (lambda d: d, "model path {p} has no config.json (not a Hugging Face model directory)"),
    (lambda d: (d / "weights.bin").write_bytes(b"x") and d / "weights.bin", "is a file; give a model directory or a .gguf"),
    (lambda d: (d / "fake.gguf").write_bytes(b"PK\x03\x04") and d / "fake.gguf", "is not a GGUF file"),
])
def test_resolve_rejects_bad_paths_in_one_line(tmp_path, make, message):
    path = make(tmp_path)
    with pytest.raises(UserError) as err:
        resolve_model_path(str(path))
    assert message.format(p=path) in str(err.value) and "\n" not in str(err.value)


def test_directory_of_gguf_files_names_one(tmp_path, tiny_gguf):
    shutil.copy(tiny_gguf, tmp_path / "m.gguf")
    with pytest.raises(UserError, match=f"name one: model.path={tmp_path / 'm.gguf'}"):
        resolve_model_path(str(tmp_path))


def _broken(tiny_model_dir, tmp_path, what):
    bad = tmp_path / what
    shutil.copytree(tiny_model_dir, bad)
    if what == "bad_json":
        (bad / "config.json").write_text("{")
    elif what == "unknown_type":
        (bad / "config.json").write_text(json.dumps({"model_type": "no_such_arch"}))
    elif what == "no_weights":
        (bad / "model.safetensors").unlink()
    elif what == "corrupt_weights":
        (bad / "model.safetensors").write_bytes((bad / "model.safetensors").read_bytes()[:500])
    return bad


@pytest.mark.parametrize("what, message", [
    ("bad_json", "is not a valid JSON file"),
    ("unknown_type", "has model type `no_such_arch`"),
    ("no_weights", "no file named model.safetensors"),
    ("corrupt_weights", "deserializing header"),
])
def test_unloadable_models_are_one_line_errors(tiny_model_dir, tmp_path, what, message):
    path = _broken(tiny_model_dir, tmp_path, what)
    with pytest.raises(UserError) as err:
        load_model(resolve_model_path(str(path)))
    assert str(err.value).startswith(f"could not load model '{path}': ") and message in str(err.value)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("keep", [5000, 60000])  # cut inside the metadata / inside the tensor data
@pytest.mark.parametrize("load", [load_model, load_tokenizer])
def test_truncated_gguf_is_a_one_line_error(tiny_gguf, tmp_path, keep, load):
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(tiny_gguf.read_bytes()[:keep])
    with pytest.raises(UserError) as err:
        load(resolve_model_path(str(cut)))
    assert f"'{cut}': " in str(err.value) and "\n" not in str(err.value)


# ------------------------------------------------------------------ dtype


def test_dtype_applies_to_policy_reference_and_engine(tiny_model_dir, tmp_path):
    cfg = load_config(overrides=[f"model.path={tiny_model_dir}", f"log.run_dir={tmp_path / 'run'}", *FAST,
                                 "model.dtype=bfloat16", "algo.beta=0.1"])
    trainer = prepare(cfg, progress=False).trainer
    for model in (trainer.policy, trainer.reference, trainer.engine.model):
        assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    metrics = trainer.train_step(trainer.next_problems())
    assert np.isfinite(metrics["loss"]) and metrics["kl"] >= 0


# ------------------------------------------------------------------ GGUF


def test_gguf_loads_as_the_same_plain_model_and_tokenizer(tiny_model_dir, tiny_gguf, tmp_path):
    reference = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    model = load_model(str(tiny_gguf))
    text = "Compute 7+5*3-8. \\boxed{12}"
    ids = load_tokenizer(str(tiny_model_dir))(text).input_ids
    tokenizer = load_tokenizer(str(tiny_gguf))
    assert tokenizer(text).input_ids == ids and tokenizer.decode(ids) == text
    assert tokenizer.eos_token == "<eos>" and tokenizer.pad_token == "<pad>" and tokenizer.padding_side == "left"
    batch = torch.tensor([ids])
    with torch.no_grad():
        assert torch.allclose(model(batch).logits, reference(batch).logits, atol=1e-6)
    # a plain float model: trainable, and it saves and reloads without the GGUF loader
    assert getattr(model, "hf_quantizer", None) is None and all(p.requires_grad for p in model.parameters())
    model.save_pretrained(tmp_path / "plain")
    assert "quantization_config" not in json.loads((tmp_path / "plain" / "config.json").read_text())
    assert load_model(str(tiny_gguf), "bfloat16").dtype == torch.bfloat16


def test_train_and_eval_commands_take_a_gguf_file(tiny_gguf, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "--no-progress", f"model.path={tiny_gguf}", f"log.run_dir={run}", "train.steps=1",
                 "model.lora.enabled=true", *FAST]) == 0
    saved = run / "checkpoints" / "step_000001" / "model"  # merged, plain: no GGUF loader, no peft
    assert AutoModelForCausalLM.from_pretrained(saved).config.model_type == "qwen2"
    assert AutoTokenizer.from_pretrained(saved).eos_token == "<eos>"
    assert main(["eval", "--no-progress", f"model.path={tiny_gguf}", *FAST]) == 0
    assert "greedy/pass@1" in capsys.readouterr().out
