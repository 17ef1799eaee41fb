"""SFT: loss only on completion tokens, distillation keeps only verified-correct samples, run output like RL."""

import json
import math
from types import SimpleNamespace

import pytest
import torch

from dashrl.config import load_config
from dashrl.errors import UserError
from dashrl.rewards.result import RewardResult
from dashrl.rollout.engine import Completion, SamplingParams
from dashrl.tasks.base import Problem
from dashrl.testbed.model import build_tokenizer
from dashrl.train import sft
from dashrl.train.batch import Sample, collate


class FixedLogits(torch.nn.Module):
    """A 'model' whose logits are one learnable (B, L, V) tensor, so gradients show which positions the loss uses."""

    def __init__(self, batch: int, length: int, vocab: int):
        super().__init__()
        self.logits = torch.nn.Parameter(torch.zeros(batch, length, vocab))

    def forward(self, input_ids, attention_mask, position_ids, logits_to_keep, use_cache):
        return SimpleNamespace(logits=self.logits[:, -logits_to_keep:])


def test_only_completion_tokens_carry_loss():
    # row a: prompt (1, 2, 3), completion (2, 3); row b: prompt (3,), completion (1, 2, 3). collate pads the
    # prompts left to P = 3 and completions right to C = 3: a = [1 2 3 | 2 3 pad], b = [pad pad 3 | 1 2 3].
    rows = [Sample("a", (1, 2, 3), (2, 3), 1.0, 1.0), Sample("b", (3,), (1, 2, 3), 1.0, 1.0)]
    mb = collate(rows, pad_id=0)
    model = FixedLogits(2, 6, 4)
    nll = sft.micro_batch_nll(model, mb)
    tokens = 5  # 2 + 3 completion tokens
    # uniform logits over V = 4: every completion token costs log 4, so the token mean is log 4 = 1.386
    assert nll.item() / tokens == pytest.approx(math.log(4))
    (nll / tokens).backward()
    # d(mean NLL)/d logit at a position that predicts token t: (softmax - onehot(t)) / 5 = 0.05, or -0.15 at t
    expected = torch.zeros(2, 6, 4)
    for row, position, target in [(0, 2, 2), (0, 3, 3), (1, 2, 1), (1, 3, 2), (1, 4, 3)]:
        expected[row, position] = 0.05
        expected[row, position, target] = -0.15
    # positions 0-1 (inside the prompt), a's position 4 (it predicts padding) and the last position get nothing
    assert torch.allclose(model.logits.grad, expected, atol=1e-6)


def test_loss_equals_causal_lm_loss_with_prompt_labels_masked(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    rows = [Sample("a", (5, 6, 7), (8, 9), 1.0, 1.0), Sample("b", (5,), (10, 11, 12), 1.0, 1.0)]
    ours = sft.micro_batch_nll(model, collate(rows, pad_id=0)) / 5
    # the usual recipe, each row on its own: labels = -100 on the prompt, Hugging Face's token-mean loss
    per_row = []
    for s in rows:
        ids = torch.tensor([list(s.prompt_ids) + list(s.completion_ids)])
        labels = ids.clone()
        labels[0, : len(s.prompt_ids)] = -100
        per_row.append(model(input_ids=ids, labels=labels).loss * len(s.completion_ids))
    assert ours.item() == pytest.approx((sum(per_row) / 5).item(), rel=1e-5)


class ScriptedEngine:
    """Returns fixed completion texts per prompt, cycling; records what it was asked."""

    def __init__(self, texts: dict[str, list[str]]):
        self.texts = texts
        self.calls = []

    def generate(self, prompts, n, sampling):
        self.calls.append((list(prompts), n))
        return [[Completion((1,), (2,), self.texts[p][i % len(self.texts[p])], "stop") for i in range(n)] for p in prompts]

    def load_weights(self, state):
        pass


class AnswerTask:
    name = "answers"

    def score(self, completion, problem):
        return RewardResult(1.0 if completion.endswith(f"\\boxed{{{problem.answer}}}") else 0.0, "checked")


def test_distillation_keeps_only_verified_correct_distinct_samples():
    tokenizer = build_tokenizer()
    problems = [Problem("p0", "Compute 1+1.\n", "2"), Problem("p1", "Compute 2+2.\n", "4"), Problem("p2", "Compute 3.\n", "3")]
    engine = ScriptedEngine({
        "Compute 1+1.\n": ["1+1\n=2\n\\boxed{2}", "\\boxed{3}", "1+1\n=2\n\\boxed{2}", "=2\n\\boxed{2}"],
        "Compute 2+2.\n": ["\\boxed{5}"],
        "Compute 3.\n": ["\\boxed{3}", "no box"],
    })
    examples, stats = sft.teacher_examples(engine, AnswerTask(), problems, tokenizer, samples=4,
                                           sampling=SamplingParams(), prompts_per_call=2)
    # p0: 3 of 4 correct, 2 distinct; p1: none; p2: 2 of 4 correct ("\boxed{3}" twice), 1 distinct
    assert (stats.sampled, stats.correct, stats.kept, stats.prompts_with_any) == (12, 5, 3, 2)
    assert [(e.problem_id, tokenizer.decode(e.completion_ids, skip_special_tokens=True)) for e in examples] == [
        ("p0", "1+1\n=2\n\\boxed{2}"), ("p0", "=2\n\\boxed{2}"), ("p2", "\\boxed{3}")]
    assert all(e.completion_ids[-1] == tokenizer.eos_token_id for e in examples)
    assert examples[0].prompt_ids == tuple(tokenizer("Compute 1+1.\n")["input_ids"])
    assert [len(prompts) for prompts, _ in engine.calls] == [2, 1]  # 2 prompts per engine call


def test_reference_data_needs_solutions():
    tokenizer = build_tokenizer()
    good = Problem("a", "Compute 2+3.\n", "5", solution="2+3\n=5\n\\boxed{5}")
    example = sft.reference_examples(tokenizer, [good], "testbed")[0]
    assert tokenizer.decode(example.completion_ids, skip_special_tokens=True) == good.solution
    with pytest.raises(UserError, match="no reference solution for problem 'b'"):
        sft.reference_examples(tokenizer, [good, Problem("b", "x", "1")], "mine")


def test_batches_visit_every_example_once_per_epoch():
    data = list(range(5))
    stream = sft.batches(data, batch_size=2, seed=3)
    drawn = [x for _ in range(5) for x in next(stream)]  # 10 draws = 2 epochs
    assert sorted(drawn[:5]) == data and sorted(drawn[5:]) == data


def _sft_config(tiny_model_dir, tmp_path, *overrides):
    return load_config(overrides=[f"model.path={tiny_model_dir}", f"log.run_dir={tmp_path / 'sft'}", "train.steps=2",
                                  "sft.num_prompts=4", "sft.batch_size=4", "train.micro_batch_size=2",
                                  "sampling.max_new_tokens=6", "eval.num_problems=4", "eval.samples=2", "eval.ks=[1,2]",
                                  "log.progress=false", *overrides])


def test_sft_run_writes_the_same_output_as_rl(tiny_model_dir, tmp_path):
    config = _sft_config(tiny_model_dir, tmp_path, "train.lr=1e-2", "train.warmup_steps=0", "train.steps=6")
    summary = sft.train_sft(sft.prepare_sft(config, progress=False), progress=False)
    run = tmp_path / "sft"
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert rows[0]["step"] == 0 and rows[0]["sft/examples"] == 4 and "eval/greedy/pass@1" in rows[0]
    steps = [r for r in rows if "time/step" in r]
    assert len(steps) == 6 and all(r["time/forward_backward"] > 0 for r in steps)
    assert steps[-1]["loss"] < steps[0]["loss"]  # 4 examples, the same batch every step: it must fit them
    assert (run / "checkpoints" / "latest").is_file() and (run / "config.yaml").is_file()
    assert summary["steps"] == 6 and set(summary["before"]) == set(summary["after"]) >= {"greedy/pass@1", "sampled/pass@2"}
    assert json.loads((run / "summary.json").read_text())["sft"]["source"] == "reference"


def test_sft_m_run_counts_teacher_time(tiny_model_dir, tmp_path, monkeypatch):
    """SFT-M end to end on the tiny model, with a task that accepts completions of even byte sum."""
    config = _sft_config(tiny_model_dir, tmp_path, "sft.source=teacher", f"sft.teacher={tiny_model_dir}",
                         "sft.teacher_samples=4", "train.steps=1")
    task = sft.load_task(config)
    task.score = lambda text, problem: RewardResult(float(sum(text.encode()) % 2 == 0), "parity")
    monkeypatch.setattr(sft, "load_task", lambda cfg: task)
    summary = sft.train_sft(sft.prepare_sft(config, progress=False), progress=False)
    rows = [json.loads(line) for line in (tmp_path / "sft" / "metrics.jsonl").read_text().splitlines()]
    assert rows[0]["sft/teacher_sampled"] == 16 and 0 < rows[0]["sft/examples"] <= 16
    assert rows[1]["time/generation"] > 0 and rows[1]["time/step"] > rows[1]["time/generation"]
    assert summary["sft"]["teacher"] == str(tiny_model_dir)


def test_teacher_that_is_never_right_is_a_clear_error(tiny_model_dir, tmp_path, monkeypatch):
    config = _sft_config(tiny_model_dir, tmp_path, "sft.source=teacher", f"sft.teacher={tiny_model_dir}")
    task = sft.load_task(config)
    task.score = lambda text, problem: RewardResult(0.0, "never")
    monkeypatch.setattr(sft, "load_task", lambda cfg: task)
    with pytest.raises(UserError, match="got none of 16 sampled completions right"):
        sft.train_sft(sft.prepare_sft(config, progress=False), progress=False)


def test_testbed_teacher_is_a_stronger_cached_checkpoint(monkeypatch):
    from dashrl.testbed import pretrain

    assert pretrain.TEACHER.target_accuracy > pretrain.PretrainSpec().target_accuracy
    assert pretrain.base_checkpoint_dir(pretrain.TEACHER) != pretrain.base_checkpoint_dir()
    tiny = pretrain.PretrainSpec(hidden=16, layers=1, batch_size=8, max_steps=2, check_every=2, calibration_size=4)
    monkeypatch.setattr(pretrain, "TEACHER", tiny)
    path = sft.resolve_teacher("testbed-teacher", progress=False)
    assert path == str(pretrain.base_checkpoint_dir(tiny)) and (pretrain.base_checkpoint_dir(tiny) / "config.json").is_file()


def test_sft_command(tiny_model_dir, tmp_path, capsys):
    from dashrl.cli import main

    args = ["sft", "--no-progress", f"model.path={tiny_model_dir}", f"log.run_dir={tmp_path / 'cli'}", "train.steps=1",
            "sft.num_prompts=2", "sft.batch_size=2", "train.micro_batch_size=2", "sampling.max_new_tokens=4",
            "eval.num_problems=2", "eval.samples=0", "eval.ks=[1]"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "before SFT" in out and "1 steps in" in out and (tmp_path / "cli" / "summary.json").is_file()
    assert main([*args[:-3], "sft.source=teacher", "sft.teacher=/no/such/model"]) == 2  # the dir holds a run
    assert "already holds a run" in capsys.readouterr().err
    assert main([*args[:-3], "sft.source=teacher", "sft.teacher=/no/such/model", "--overwrite"]) == 2
    assert capsys.readouterr().err == "dashrl: error: model path does not exist: /no/such/model\n"


def test_sigterm_ends_sft_after_the_current_step_with_its_model_saved(tiny_model_dir, tmp_path, capsys, monkeypatch):
    import os
    import signal

    from dashrl.cli import main

    real_step = sft.sft_step

    def step_then_signal(*args, **kwargs):  # the scheduler's SIGTERM arrives during step 2
        if step_then_signal.calls == 1:
            os.kill(os.getpid(), signal.SIGTERM)
        step_then_signal.calls += 1
        return real_step(*args, **kwargs)

    step_then_signal.calls = 0
    monkeypatch.setattr(sft, "sft_step", step_then_signal)
    run = tmp_path / "cli"
    code = main(["sft", "--no-progress", f"model.path={tiny_model_dir}", f"log.run_dir={run}", "train.steps=5",
                 "sft.num_prompts=2", "sft.batch_size=2", "train.micro_batch_size=2", "sampling.max_new_tokens=4",
                 "eval.num_problems=2", "eval.samples=0", "eval.ks=[1]", "log.save_every=0"])
    err = capsys.readouterr().err
    assert code == 143 and "SIGTERM: SFT stopped after step 2 of 5" in err and "Traceback" not in err
    assert (run / "checkpoints" / "latest").read_text().strip() == "step_000002"  # saved though save_every=0
    summary = json.loads((run / "summary.json").read_text())
    assert summary["interrupted"] == "SIGTERM" and summary["steps"] == 2
    assert summary["after"] == {} and summary["before"]  # stopped before the final evaluation: no "after"
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL  # the handler is restored
