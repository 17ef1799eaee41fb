"""Tests for dashrl.train.checkpoint: full round trip, crash safety, pruning.

Uses a one-layer Qwen2 model built from a config and a WordLevel tokenizer
built in code, so nothing is downloaded and everything runs on CPU in seconds.
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import AutoTokenizer, PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

from dashrl.train.checkpoint import latest_checkpoint, load_trainer_state, save_checkpoint


def _tokenizer() -> PreTrainedTokenizerFast:
    vocab = {tok: i for i, tok in enumerate(["<pad>", "<eos>", "<unk>", *"abcdef"])}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>", unk_token="<unk>"
    )


def _model() -> Qwen2ForCausalLM:
    torch.manual_seed(0)
    config = Qwen2Config(
        vocab_size=32,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
    )
    return Qwen2ForCausalLM(config)


class Run:
    """A model with its optimizer and a decaying learning-rate schedule."""

    def __init__(self) -> None:
        self.model = _model()
        self.tokenizer = _tokenizer()
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=1e-2)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda s: 1.0 / (1 + s))

    def train_step(self) -> None:
        ids = torch.randint(0, 32, (2, 5))
        loss = self.model(input_ids=ids, labels=ids).loss
        loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad()
        self.scheduler.step()

    def save(self, run_dir: Path, step: int, **kwargs: int) -> Path:
        return save_checkpoint(
            run_dir, step, self.model, self.tokenizer, self.optimizer, self.scheduler,
            {"step_note": step}, **kwargs,
        )


@pytest.fixture
def run() -> Run:
    return Run()


def _clone_state(state: dict) -> dict:
    return {k: v.detach().clone() for k, v in state.items()}


def test_round_trip_restores_weights_optimizer_scheduler_and_rng(run: Run, tmp_path: Path) -> None:
    run.train_step()
    weights = _clone_state(run.model.state_dict())
    exp_avg = {i: s["exp_avg"].clone() for i, s in run.optimizer.state_dict()["state"].items()}
    last_lr = run.scheduler.get_last_lr()
    ckpt = run.save(tmp_path, 1)
    expected_draws = (torch.rand(4), random.random(), np.random.rand())

    run.train_step()
    assert run.scheduler.get_last_lr() != last_lr

    assert latest_checkpoint(tmp_path) == ckpt == tmp_path / "checkpoints" / "step_000001"
    assert load_trainer_state(ckpt, run.optimizer, run.scheduler) == {
        "step": 1, "extra": {"step_note": 1}
    }
    assert torch.equal(torch.rand(4), expected_draws[0])
    assert random.random() == expected_draws[1]
    assert np.random.rand() == expected_draws[2]
    assert run.scheduler.get_last_lr() == last_lr
    for i, state in run.optimizer.state_dict()["state"].items():
        assert torch.equal(state["exp_avg"], exp_avg[i])

    reloaded = Qwen2ForCausalLM.from_pretrained(ckpt / "model")
    for name, tensor in reloaded.state_dict().items():
        assert torch.equal(tensor, weights[name]), name
    tokenizer = AutoTokenizer.from_pretrained(ckpt / "model")
    assert tokenizer("a b c")["input_ids"] == run.tokenizer("a b c")["input_ids"]


def test_no_checkpoint_gives_none(tmp_path: Path) -> None:
    assert latest_checkpoint(tmp_path) is None


def test_partial_writes_are_ignored(run: Run, tmp_path: Path) -> None:
    good = run.save(tmp_path, 1)
    root = tmp_path / "checkpoints"
    (root / ".tmp-step_000002-abc" / "model").mkdir(parents=True)
    (root / ".tmp-step_000002-abc" / "trainer_state.pt").write_bytes(b"partial")
    (root / "step_000003" / "model").mkdir(parents=True)
    assert latest_checkpoint(tmp_path) == good

    (root / "latest").write_text("step_000003\n")
    assert latest_checkpoint(tmp_path) == good
    (root / "latest").unlink()
    assert latest_checkpoint(tmp_path) == good

    run.save(tmp_path, 4)
    assert not list(root.glob(".tmp-*"))


class _CrashingTokenizer:
    def save_pretrained(self, path: Path) -> None:
        raise RuntimeError("simulated crash mid-save")


def test_crash_during_save_keeps_previous_checkpoint(run: Run, tmp_path: Path) -> None:
    good = run.save(tmp_path, 1)
    with pytest.raises(RuntimeError):
        save_checkpoint(
            tmp_path, 2, run.model, _CrashingTokenizer(), run.optimizer, run.scheduler, {}
        )
    root = tmp_path / "checkpoints"
    assert not list(root.glob(".tmp-*"))  # a failed save cleans up after itself
    assert not (root / "step_000002").exists()
    assert latest_checkpoint(tmp_path) == good


def test_keep_last_prunes_older_steps(run: Run, tmp_path: Path) -> None:
    for step in (1, 2, 3):
        run.save(tmp_path, step, keep_last=2)
    root = tmp_path / "checkpoints"
    assert sorted(p.name for p in root.glob("step_*")) == ["step_000002", "step_000003"]
    assert not list(root.glob(".tmp-*"))
    assert latest_checkpoint(tmp_path) == root / "step_000003"


def test_saving_an_existing_step_replaces_it(run: Run, tmp_path: Path) -> None:
    run.save(tmp_path, 1)
    run.train_step()
    ckpt = run.save(tmp_path, 1)
    reloaded = Qwen2ForCausalLM.from_pretrained(ckpt / "model")
    for name, tensor in reloaded.state_dict().items():
        assert torch.equal(tensor, run.model.state_dict()[name]), name


def test_keep_last_must_be_positive(run: Run, tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        run.save(tmp_path, 1, keep_last=0)
