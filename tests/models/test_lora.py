"""LoRA: only adapters train, the engine and checkpoints get W + (alpha / r) B A, the KL reference is
the base model with adapters off, and a LoRA run resumes exactly."""

import json

import pytest
import torch
from peft import LoraConfig as PeftLoraConfig
from peft import get_peft_model
from transformers import AutoModelForCausalLM

from dashrl.cli import main
from dashrl.config import LoraConfig, load_config
from dashrl.errors import UserError
from dashrl.rewards.result import RewardResult
from dashrl.train.checkpoint import save_checkpoint
from dashrl.models.lora import ADAPTER, AdaptersOff, apply_lora, plain_state_dict
from dashrl.train.run import prepare, resume_config, train

FAST = ["algo.group_size=4", "algo.prompts_per_step=2", "train.micro_batch_size=4", "algo.filter_tau=null",
        "sampling.max_new_tokens=6", "eval.num_problems=2", "eval.samples=0"]
LORA = ["model.lora.enabled=true", "model.lora.r=4", "model.lora.alpha=8", "train.lr=0.05", "train.warmup_steps=0"]
Q_PROJ = "model.layers.0.self_attn.q_proj"


def _setup(tiny_model_dir, tmp_path, *overrides):
    cfg = load_config(overrides=[f"model.path={tiny_model_dir}", f"log.run_dir={tmp_path / 'run'}",
                                 *FAST, *LORA, *overrides])
    trainer = prepare(cfg, progress=False).trainer
    trainer.task.score = _parity_reward
    return trainer


def _parity_reward(text, problem):
    """A reward that differs within groups even for a random model, so every step has a gradient."""
    return RewardResult(float(sum(text.encode()) % 2), "parity")


def _snapshot(model):
    return {name: p.detach().clone() for name, p in model.named_parameters()}


def test_merge_formula_by_hand():
    # W = I (2 x 2), r = 1, alpha = 2 -> scale = alpha / r = 2
    # A = [[1, 2]], B = [[0.5], [-1]] -> B @ A = [[0.5, 1], [-1, -2]]
    # merged = I + 2 * B @ A = [[1 + 1, 0 + 2], [0 - 2, 1 - 4]] = [[2, 2], [-2, -3]]
    net = torch.nn.Sequential()
    net.add_module("proj", torch.nn.Linear(2, 2, bias=False))
    with torch.no_grad():
        net.proj.weight.copy_(torch.eye(2))
    model = get_peft_model(net, PeftLoraConfig(r=1, lora_alpha=2, target_modules=["proj"]))
    with torch.no_grad():
        model.base_model.model.proj.lora_A["default"].weight.copy_(torch.tensor([[1.0, 2.0]]))
        model.base_model.model.proj.lora_B["default"].weight.copy_(torch.tensor([[0.5], [-1.0]]))
    state = plain_state_dict(model)
    assert list(state) == ["proj.weight"]  # base names only: no lora_A / lora_B / base_layer
    assert torch.equal(state["proj.weight"], torch.tensor([[2.0, 2.0], [-2.0, -3.0]]))
    assert torch.equal(model.base_model.model.proj.base_layer.weight, torch.eye(2))  # the policy is not merged


def test_only_adapters_train_and_the_engine_gets_merged_weights(tiny_model_dir, tmp_path):
    trainer = _setup(tiny_model_dir, tmp_path, "rollout.hf_share_policy=false")  # an isolated engine copy
    trainable = {name for name, p in trainer.policy.named_parameters() if p.requires_grad}
    assert trainable and all(".lora_A." in n or ".lora_B." in n for n in trainable)
    optimized = {id(p) for group in trainer.optimizer.param_groups for p in group["params"]}
    assert optimized == {id(p) for p in trainer.policy.parameters() if p.requires_grad}
    before = _snapshot(trainer.policy)
    trainer.train_step(trainer.next_problems())
    after = _snapshot(trainer.policy)
    changed = {name for name in before if not torch.equal(before[name], after[name])}
    assert changed and changed <= trainable  # some adapters moved, no base weight did
    assert any(".lora_B." in name for name in changed)  # B starts at zero, so the update is nonzero now

    # what the engine holds: W + (alpha / r) B A with alpha / r = 8 / 4 = 2, computed here by hand
    layer = trainer.policy.get_base_model().get_submodule(Q_PROJ)
    W, A, B = layer.base_layer.weight, layer.lora_A["default"].weight, layer.lora_B["default"].weight
    engine = trainer.engine.model.state_dict()
    assert torch.allclose(engine[f"{Q_PROJ}.weight"], W + 2.0 * B @ A, atol=1e-7)
    assert not torch.equal(engine[f"{Q_PROJ}.weight"], W)
    assert torch.equal(engine[f"{Q_PROJ}.bias"], layer.base_layer.bias)  # bias="none": unchanged
    assert torch.equal(engine["model.embed_tokens.weight"], after["base_model.model.model.embed_tokens.weight"])
    assert set(engine) == set(AutoModelForCausalLM.from_pretrained(tiny_model_dir).state_dict())


def test_checkpoint_is_a_merged_plain_model_with_the_policys_logits(tiny_model_dir, tmp_path):
    trainer = _setup(tiny_model_dir, tmp_path, "rollout.hf_share_policy=false")
    trainer.train_step(trainer.next_problems())
    ckpt = save_checkpoint(tmp_path / "run", 1, trainer.policy, trainer.tokenizer, trainer.optimizer,
                           trainer.scheduler, {})
    plain = AutoModelForCausalLM.from_pretrained(ckpt / "model")  # no peft involved
    assert type(plain).__name__ == "Qwen2ForCausalLM"
    assert not any("lora" in key for key in plain.state_dict())
    assert json.loads((ckpt / ADAPTER / "adapter_config.json").read_text())["r"] == 4
    ids = torch.tensor([trainer.tokenizer("Compute 7+5*3-8.").input_ids])
    trainer.policy.eval()
    with torch.no_grad():
        assert torch.allclose(plain(ids).logits, trainer.policy(input_ids=ids).logits, atol=1e-5)
        assert torch.allclose(plain(ids).logits, trainer.engine.model(ids).logits, atol=1e-6)


def test_reference_is_the_base_model_without_a_second_copy(tiny_model_dir, tmp_path):
    trainer = _setup(tiny_model_dir, tmp_path, "algo.beta=0.1")
    assert isinstance(trainer.reference, AdaptersOff) and trainer.reference.model is trainer.policy
    first = trainer.train_step(trainer.next_problems())
    second = trainer.train_step(trainer.next_problems())
    assert first["kl"] == pytest.approx(0.0, abs=1e-6)  # step 1 samples before any update: policy == base
    assert second["kl"] > 0  # after an update the adapters make the policy differ from the base
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    ids = torch.tensor([trainer.tokenizer("Compute 1+2.").input_ids])
    with torch.no_grad():
        assert torch.allclose(trainer.reference(input_ids=ids).logits, base(ids).logits, atol=1e-6)
        assert not torch.allclose(trainer.policy(input_ids=ids).logits, base(ids).logits, atol=1e-4)
    assert trainer.policy.training  # the reference call restores training mode


def test_bfloat16_base_with_lora(tiny_model_dir, tmp_path):
    trainer = _setup(tiny_model_dir, tmp_path, "model.dtype=bfloat16", "rollout.hf_share_policy=false")
    base = {p.dtype for n, p in trainer.policy.named_parameters() if not p.requires_grad}
    assert base == {torch.bfloat16}
    assert {p.dtype for p in trainer.engine.model.parameters()} == {torch.bfloat16}
    trainer.train_step(trainer.next_problems())
    assert all(t.dtype == torch.bfloat16 for t in plain_state_dict(trainer.policy).values())


def _rows(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def _run(tiny_model_dir, run, *extra, resume=False):
    """A short LoRA run through the Python API (so the reward can vary within groups)."""
    if resume:
        cfg = resume_config(run, list(extra))
    else:
        cfg = load_config(overrides=[f"model.path={tiny_model_dir}", f"log.run_dir={run}", *FAST, *LORA,
                                     "eval.every=0", "log.progress=false", *extra])
    setup = prepare(cfg, resume=resume, progress=False)
    setup.trainer.task.score = _parity_reward
    train(setup, progress=False)


def test_lora_run_resumes_exactly(tiny_model_dir, tmp_path):
    straight, split = tmp_path / "straight", tmp_path / "split"
    _run(tiny_model_dir, straight, "train.steps=3")
    _run(tiny_model_dir, split, "train.steps=2", "log.save_every=2")
    _run(tiny_model_dir, split, "train.steps=3", resume=True)
    a, b = _rows(straight)[-1], _rows(split)[-1]
    assert a["step"] == b["step"] == 3
    assert a["completion/mean_length"] == b["completion/mean_length"] and a["reward/mean"] == b["reward/mean"]
    assert a["loss"] == pytest.approx(b["loss"], rel=1e-5, abs=1e-7)
    merged = [AutoModelForCausalLM.from_pretrained(run / "checkpoints" / "step_000003" / "model").state_dict()
              for run in (straight, split)]
    for key, tensor in merged[0].items():
        assert torch.allclose(tensor, merged[1][key], atol=1e-6), key
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir).state_dict()
    assert not torch.allclose(merged[0][f"{Q_PROJ}.weight"], base[f"{Q_PROJ}.weight"])  # the adapters moved
    assert torch.equal(merged[0]["model.norm.weight"], base["model.norm.weight"])  # not adapted: untouched


@pytest.fixture(scope="module")
def lora_run(tiny_model_dir, tmp_path_factory):
    """A one-step LoRA run with its checkpoint (shared: the refused resumes below write nothing)."""
    run = tmp_path_factory.mktemp("lora-run") / "run"
    _run(tiny_model_dir, run, "train.steps=1")
    return run


@pytest.mark.parametrize("override, message", [
    ("model.lora.r=2", "the checkpoint's adapter has r=4, but model.lora.r=2"),
    ("model.lora.alpha=3", "the checkpoint's adapter has alpha=8.0, but model.lora.alpha=3.0"),
    ("model.lora.target_modules=[q_proj]", "does not fit model.lora.target_modules"),
    ("model.lora.enabled=false", "was trained with LoRA"),
])
def test_resume_with_other_lora_settings_is_refused(lora_run, capsys, override, message):
    assert main(["train", "--no-progress", "--resume", str(lora_run), "train.steps=2", override]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and len(_rows(lora_run)) == 2  # nothing new written


def test_resume_of_a_full_finetune_with_lora_is_refused(tiny_model_dir, tmp_path, capsys):
    run = tmp_path / "run"
    _run(tiny_model_dir, run, "train.steps=1", "model.lora.enabled=false")
    assert main(["train", "--no-progress", "--resume", str(run), "model.lora.enabled=true"]) == 2
    assert "holds no adapter/" in capsys.readouterr().err


@pytest.mark.parametrize("targets, message", [
    (["no_such_proj"], "model.lora: "),
    (["lm_head"], "share tied embedding weights"),
])
def test_bad_target_modules(tiny_model_dir, targets, message):
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    with pytest.raises(UserError, match=message):
        apply_lora(model, LoraConfig(enabled=True, target_modules=targets))
