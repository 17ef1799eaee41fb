"""The testbed base checkpoint: built once, cached, atomic; the real one lands in its band."""

import json

import pytest
from transformers import AutoModelForCausalLM

from dashrl.testbed import pretrain
from dashrl.testbed.pretrain import PretrainSpec, base_checkpoint_dir, ensure_base_checkpoint

TINY = PretrainSpec(hidden=16, layers=1, batch_size=8, max_steps=4, check_every=2, calibration_size=4)


def test_built_once_then_reused(monkeypatch):
    path = ensure_base_checkpoint(TINY, progress=False)
    info = json.loads((path / "pretrain.json").read_text())
    assert info["steps"] in (2, 4) and info["spec"]["hidden"] == 16
    AutoModelForCausalLM.from_pretrained(path)
    monkeypatch.setattr(pretrain, "pretrain", lambda *a, **k: pytest.fail("rebuilt a cached checkpoint"))
    assert ensure_base_checkpoint(TINY, progress=False) == path


def test_interrupted_build_leaves_nothing_that_loads(monkeypatch):
    def crash(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(pretrain, "pretrain", crash)
    with pytest.raises(KeyboardInterrupt):
        ensure_base_checkpoint(TINY, progress=False)
    final = base_checkpoint_dir(TINY)
    assert not final.exists()
    assert not [p for p in final.parent.iterdir() if p.name.startswith(".tmp-")]


def test_cache_key_follows_the_spec():
    assert base_checkpoint_dir(TINY) != base_checkpoint_dir(PretrainSpec())


@pytest.mark.slow
def test_real_base_checkpoint_lands_in_band():
    """Held-out greedy pass@1 of the built base is between 15% and 50% (RL needs signal and room)."""
    from dashrl.models import load_model, load_tokenizer
    from dashrl.tasks.testbed import ArithmeticTask

    path = ensure_base_checkpoint(progress=False)
    problems = ArithmeticTask().eval_problems(256, 999)
    accuracy = pretrain.greedy_accuracy(load_model(str(path)), load_tokenizer(str(path)), problems)
    assert 0.15 <= accuracy <= 0.50, accuracy
