"""No lost work, no silent divergence (issue 11): kills, signals, damaged files, full disks, bad rewards.

The crash tests kill a short run (3 steps, checkpoints at steps 2 and 3) at a
chosen point (tests/train/crash_points.py), resume it, and check that the
metrics (timings aside), the final weights and the summary equal those of an
uninterrupted run. A fast subset runs in-process (the "kill" is an exception
nothing catches); ``-m slow`` runs every point with a real SIGKILL.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from dashrl.cli import main
from dashrl.runlog import read_metrics
from dashrl.train import guards
from tests.train.crash_points import POINTS, Killed, install, raise_killed

REPO = Path(__file__).resolve().parents[2]
ARGS = ["algo.group_size=2", "algo.prompts_per_step=2", "train.micro_batch_size=2", "algo.filter_tau=null",
        "sampling.max_new_tokens=8", "eval.num_problems=4", "eval.samples=2", "eval.ks=[1,2]", "eval.every=0",
        "train.steps=3", "log.save_every=2", "log.keep_last=5"]
TIMING = ("time/", "throughput/", "wall_seconds")
SUMMARY_TIMING = ("wall_seconds", "train_seconds", "seconds_per_step", "stage_shares", "stage_seconds")


def _train(model, run, *extra) -> int:
    return main(["train", "--no-progress", f"model.path={model}", f"log.run_dir={run}", *ARGS, *extra])


def _resume(run, *extra) -> int:
    return main(["train", "--no-progress", "--resume", str(run), *extra])


def _rows(run: Path) -> list[dict]:
    rows = read_metrics(run / "metrics.jsonl")
    return [{k: v for k, v in r.items() if not k.startswith(TIMING)} for r in rows]


def _summary(run: Path) -> dict:
    summary = json.loads((run / "summary.json").read_text())
    return {k: v for k, v in summary.items() if k not in SUMMARY_TIMING}


def _weights(run: Path) -> dict[str, torch.Tensor]:
    latest = (run / "checkpoints" / "latest").read_text().strip()
    return load_file(str(run / "checkpoints" / latest / "model" / "model.safetensors"))


def _outcome(run: Path):
    return _rows(run), _summary(run), _weights(run)


def _assert_same(run: Path, reference) -> None:
    rows, summary, weights = _outcome(run)
    ref_rows, ref_summary, ref_weights = reference
    assert [r["step"] for r in rows] == [0, 1, 2, 3]
    assert rows == ref_rows
    assert summary == ref_summary
    assert weights.keys() == ref_weights.keys()
    assert all(torch.equal(weights[k], ref_weights[k]) for k in weights)


@pytest.fixture(scope="module")
def reference(tiny_model_dir, tmp_path_factory):
    run = tmp_path_factory.mktemp("reference") / "run"
    assert _train(tiny_model_dir, run) == 0
    return _outcome(run)


# ------------------------------------------------------------------ kills


FAST_KILLS = [("after_checkpoint", 2), ("mid_row", 3), ("during_step", 3)]
ALL_KILLS = [("during_step", 1), ("during_step", 2), ("during_step", 3), ("before_checkpoint", 1),
             ("before_checkpoint", 2), ("mid_checkpoint", 1), ("mid_checkpoint", 2), ("after_checkpoint", 1),
             ("after_checkpoint", 2), ("mid_row", 1), ("mid_row", 3), ("mid_row", 4), ("after_row", 4),
             ("during_eval", 1), ("during_eval", 2), ("before_summary", 1)]
assert {p for p, _ in ALL_KILLS} == set(POINTS)


@pytest.mark.parametrize("point, n", FAST_KILLS)
def test_killed_run_resumes_to_the_uninterrupted_result(point, n, tiny_model_dir, tmp_path, reference, capsys):
    """after_checkpoint 2: killed between the last step's checkpoint and its metrics row (issue 11.1)."""
    run = tmp_path / "run"
    with pytest.MonkeyPatch.context() as mp:
        install(point, n, raise_killed, patch=mp.setattr)
        with pytest.raises(Killed):
            _train(tiny_model_dir, run)
    assert _resume(run) == 0
    _assert_same(run, reference)
    if point == "after_checkpoint":  # the final evaluation is there: "after RL" is not a copy of "before RL"
        assert "eval/greedy/pass@1" in _rows(run)[-1]


@pytest.mark.slow
@pytest.mark.parametrize("point, n", ALL_KILLS)
def test_sigkilled_run_resumes_to_the_uninterrupted_result(point, n, tiny_model_dir, tmp_path, reference):
    run = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    killed = subprocess.run([sys.executable, "-m", "tests.train.crash_points", point, str(n), "train", "--no-progress",
                             f"model.path={tiny_model_dir}", f"log.run_dir={run}", *ARGS], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=300)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    if not (run / "config.yaml").exists():  # killed before anything was written: start it again
        assert _train(tiny_model_dir, run) == 0
    else:
        assert _resume(run) == 0
    _assert_same(run, reference)


# ------------------------------------------------------------------ signals


def _signal_at_step(mp, signum: int, step: int) -> None:
    """Send ``signum`` to this process during training step ``step`` (the real handler runs)."""
    from dashrl.train.trainer import Trainer

    real = Trainer.train_step

    def train_step(self, problems):
        if self.step + 1 == step:
            os.kill(os.getpid(), signum)
        return real(self, problems)

    mp.setattr(Trainer, "train_step", train_step)


@pytest.mark.parametrize("signum, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130), (signal.SIGHUP, 129)])
def test_signal_saves_the_step_in_progress_and_resume_finishes_the_run(signum, code, tiny_model_dir, tmp_path,
                                                                       reference, capsys):
    run = tmp_path / "run"
    with pytest.MonkeyPatch.context() as mp:
        _signal_at_step(mp, signum, 2)
        assert _train(tiny_model_dir, run, "log.save_every=100") == code
    err = capsys.readouterr().err
    name = signal.Signals(signum).name
    assert f"dashrl: {name}: stopped after step 2 of 3, checkpoint saved; continue with: dashrl train --resume" in err
    assert "Traceback" not in err
    assert (run / "checkpoints" / "latest").read_text().strip() == "step_000002"  # save_every=100: saved anyway
    summary = json.loads((run / "summary.json").read_text())
    assert summary["interrupted"] == name and summary["steps"] == 2 and summary["after"] == {}
    assert signal.getsignal(signum) in (signal.default_int_handler, signal.SIG_DFL)  # handlers restored
    assert _resume(run, "log.save_every=2") == 0
    rows, summary, _ = _outcome(run)
    ref_rows, ref_summary, _ = reference
    assert [r["step"] for r in rows] == [0, 1, 2, 3]
    for r, ref in zip(rows, ref_rows):  # step 2's periodic evaluation was skipped to stop fast; the rest is equal
        assert {k: v for k, v in r.items()} == {k: v for k, v in ref.items() if k in r}
    assert "interrupted" not in summary and summary["after"] == ref_summary["after"]


def test_signal_during_the_first_evaluation_checkpoints_step_0(tiny_model_dir, tmp_path, reference, monkeypatch):
    import dashrl.train.run as run_module

    real = run_module._eval
    calls = []

    def signalled_eval(*args):
        calls.append(1)
        if len(calls) == 1:
            os.kill(os.getpid(), signal.SIGTERM)
        return real(*args)

    run = tmp_path / "run"
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(run_module, "_eval", signalled_eval)
        assert _train(tiny_model_dir, run) == 143
    assert (run / "checkpoints" / "latest").read_text().strip() == "step_000000"
    assert _resume(run) == 0
    _assert_same(run, reference)


@pytest.mark.slow
def test_sigterm_to_a_real_process_then_a_second_signal_exits_at_once(tiny_model_dir, tmp_path):
    run = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    argv = [sys.executable, "-m", "dashrl", "train", "--no-progress", f"model.path={tiny_model_dir}",
            f"log.run_dir={run}", *ARGS, "train.steps=100000", "log.save_every=100000"]
    proc = subprocess.Popen(argv, cwd=REPO, env=env, stderr=subprocess.PIPE, text=True)
    metrics = run / "metrics.jsonl"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and (not metrics.exists() or len(metrics.read_text().splitlines()) < 3):
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=120) == 143
    err = proc.stderr.read()
    assert "SIGTERM: stopped after step" in err and "Traceback" not in err
    summary = json.loads((run / "summary.json").read_text())
    assert summary["interrupted"] == "SIGTERM"
    assert (run / "checkpoints" / "latest").read_text().strip() == f"step_{summary['steps']:06d}"
    # a second signal while stopping: gone at once
    proc = subprocess.Popen([*argv[:6], f"log.run_dir={tmp_path / 'two'}", *argv[7:]], cwd=REPO, env=env,
                            stderr=subprocess.PIPE, text=True)
    metrics = tmp_path / "two" / "metrics.jsonl"
    while time.monotonic() < deadline and not metrics.exists():
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=60) == 130
    assert "SIGINT again: exiting now" in proc.stderr.read()


# ------------------------------------------------------------------ damaged run directories


def _two_checkpoints(model, run):
    assert _train(model, run, "train.steps=2", "log.save_every=1") == 0
    return run / "checkpoints" / "step_000001", run / "checkpoints" / "step_000002"


@pytest.mark.parametrize("damage", ["empty trainer state", "truncated trainer state", "truncated model"])
def test_damaged_newest_checkpoint_falls_back_to_the_previous_one(damage, tiny_model_dir, tmp_path, capsys):
    run = tmp_path / "run"
    older, newest = _two_checkpoints(tiny_model_dir, run)
    target = newest / ("model/model.safetensors" if damage == "truncated model" else "trainer_state.pt")
    size = target.stat().st_size
    with open(target, "r+b") as f:
        f.truncate(0 if damage.startswith("empty") else size // 2)
    capsys.readouterr()
    assert _resume(run, "train.steps=3") == 0
    err = capsys.readouterr().err
    assert "dashrl: warning: checkpoint step_000002 cannot be used" in err and "falling back to step_000001" in err
    assert "Traceback" not in err
    assert [r["step"] for r in read_metrics(run / "metrics.jsonl")] == [0, 1, 2, 3]


def test_torn_last_metrics_line_is_dropped_and_a_torn_inner_line_is_refused(tiny_model_dir, tmp_path, capsys):
    run = tmp_path / "run"
    assert _train(tiny_model_dir, run, "train.steps=2", "log.save_every=1") == 0
    metrics = run / "metrics.jsonl"
    lines = metrics.read_text().splitlines(keepends=True)
    metrics.write_text("".join(lines) + lines[-1][:20])  # a kill while writing a row past the checkpoint
    capsys.readouterr()
    assert _resume(run, "train.steps=3") == 0
    assert "line 4 is incomplete" in capsys.readouterr().err
    assert [r["step"] for r in read_metrics(metrics)] == [0, 1, 2, 3]
    # damage in the middle: refused in one line, and config.yaml is not rewritten first
    lines = metrics.read_text().splitlines(keepends=True)
    metrics.write_text(lines[0] + lines[1][:10] + "\n" + "".join(lines[2:]))
    config_before = (run / "config.yaml").read_text()
    assert _resume(run, "train.steps=5") == 2
    err = capsys.readouterr().err
    assert "metrics.jsonl line 2 is not a metrics row" in err and err.count("\n") == 1
    assert (run / "config.yaml").read_text() == config_before


def test_resume_refuses_a_log_with_a_gap(tiny_model_dir, tmp_path, capsys):
    run = tmp_path / "run"
    assert _train(tiny_model_dir, run, "train.steps=2", "log.save_every=1") == 0
    metrics = run / "metrics.jsonl"
    lines = metrics.read_text().splitlines(keepends=True)
    metrics.write_text(lines[0] + lines[2])  # step 1 missing
    assert _resume(run, "train.steps=3") == 2
    assert "has no row for step 1, but the checkpoint is at step 2" in capsys.readouterr().err


def test_full_disk_during_a_checkpoint_is_one_line_and_keeps_the_previous_one(tiny_model_dir, tmp_path, monkeypatch,
                                                                               capsys):
    import dashrl.train.checkpoint as checkpoint

    real_save, saves = checkpoint.torch.save, []

    def full_disk(obj, path, *args, **kwargs):
        saves.append(path)
        if len(saves) == 2:  # the second checkpoint
            with open(path, "wb") as f:
                f.write(b"partial")
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(obj, path, *args, **kwargs)

    monkeypatch.setattr(checkpoint.torch, "save", full_disk)
    run = tmp_path / "run"
    assert _train(tiny_model_dir, run, "train.steps=2", "log.save_every=1") == 2
    err = capsys.readouterr().err
    assert "no space left on device; the previous checkpoint (step_000001) is intact" in err
    assert err.splitlines()[-1].startswith("dashrl: error: ") and "Traceback" not in err
    root = run / "checkpoints"
    assert (root / "latest").read_text().strip() == "step_000001" and not list(root.glob(".tmp-*"))


# ------------------------------------------------------------------ rewards


def _reward_run(model, tmp_path, body: str, *extra) -> int:
    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"{i} + 1 =", "answer": str(i + 1)}) + "\n" for i in range(8)))
    reward = tmp_path / "reward.py"
    reward.write_text(body)
    return _train(model, tmp_path / "run", "task.name=jsonl", f"task.path={data}", "task.eval_size=4",
                  f"task.reward={reward}:reward", "train.steps=2", *extra)


def test_reward_that_raises_on_some_completions_scores_them_0_and_counts_them(tiny_model_dir, tmp_path, capsys):
    body = "calls = [0]\ndef reward(c, p):\n    calls[0] += 1\n    if calls[0] % 4 == 0:\n        raise KeyError(p.id)\n    return 1.0 if c else 0.5\n"
    assert _reward_run(tiny_model_dir, tmp_path, body) == 0
    err = capsys.readouterr().err
    assert err.count("Traceback") == 1 and "raised on problem" in err and "reward_error" in err  # told once
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["reward_errors"] > 0


def test_reward_that_mostly_fails_stops_the_run_in_one_line(tiny_model_dir, tmp_path, capsys):
    body = "calls = [0]\ndef reward(c, p):\n    calls[0] += 1\n    if calls[0] > 1:\n        raise ValueError('bug')\n    return 0.0\n"
    assert _reward_run(tiny_model_dir, tmp_path, body) == 2
    last = capsys.readouterr().err.splitlines()[-1]
    assert last.startswith("dashrl: error: task.reward") and "raised on" in last


@pytest.mark.parametrize("value", ["float('nan')", "float('inf')"])
def test_non_finite_reward_is_refused_naming_function_and_problem(value, tiny_model_dir, tmp_path, capsys):
    body = f"calls = [0]\ndef reward(c, p):\n    calls[0] += 1\n    return 0.0 if calls[0] == 1 else {value}\n"
    assert _reward_run(tiny_model_dir, tmp_path, body) == 2
    err = capsys.readouterr().err
    last = err.splitlines()[-1]
    assert last.startswith("dashrl: error: ") and "Traceback" not in err
    assert "reward.py:reward returned" in last and "for problem" in last and "must be finite" in last


# ------------------------------------------------------------------ divergence


def test_huge_learning_rate_is_refused_at_load(tiny_model_dir, tmp_path, capsys):
    assert _train(tiny_model_dir, tmp_path / "run", "train.lr=1e38") == 2
    assert "train.lr = '1e38': Input should be less than or equal to 1" in capsys.readouterr().err


def test_weights_turning_non_finite_stop_the_run_before_a_checkpoint_sees_them(tiny_model_dir, tmp_path,
                                                                               monkeypatch, capsys):
    real_step, steps = torch.optim.AdamW.step, []

    def exploding_step(self, *args, **kwargs):
        out = real_step(self, *args, **kwargs)
        steps.append(1)
        if len(steps) == 2:  # the second update overflows a weight
            with torch.no_grad():
                self.param_groups[0]["params"][0].view(-1)[0] = float("inf")
        return out

    monkeypatch.setattr(torch.optim.AdamW, "step", exploding_step)
    run = tmp_path / "run"
    assert _train(tiny_model_dir, run, "log.save_every=1") == 2
    err = capsys.readouterr().err
    assert "training diverged: weight" in err and "became non-finite at step 2" in err and "Traceback" not in err
    assert (run / "checkpoints" / "latest").read_text().strip() == "step_000001"  # the last good one
    for ckpt in (run / "checkpoints").glob("step_*"):
        assert all(torch.isfinite(t).all() for t in load_file(str(ckpt / "model" / "model.safetensors")).values())


def test_non_finite_steps_are_skipped_then_stop_after_a_few_in_a_row(tiny_model_dir, tmp_path, monkeypatch, capsys):
    from dashrl.train import trainer as trainer_module

    real = torch.nn.utils.clip_grad_norm_
    bad_steps = {2}

    class _Clip:
        calls = 0

    def clip(params, max_norm):
        _Clip.calls += 1
        norm = real(params, max_norm)
        return torch.tensor(float("nan")) if _Clip.calls in bad_steps else norm

    monkeypatch.setattr(trainer_module.torch.nn.utils, "clip_grad_norm_", clip)
    run = tmp_path / "run"
    assert _train(tiny_model_dir, run) == 0  # one bad step: skipped and counted
    rows = read_metrics(run / "metrics.jsonl")
    assert rows[2]["optimizer/nonfinite"] == 1.0 and rows[2]["optimizer/skipped"] == 1.0
    assert json.loads((run / "summary.json").read_text())["nonfinite_steps"] == 1
    _Clip.calls, bad_steps = 0, {1, 2, 3, 4, 5, 6}
    monkeypatch.setattr(guards, "MAX_NONFINITE_IN_A_ROW", 2)
    assert _train(tiny_model_dir, tmp_path / "run2", "train.steps=6") == 2
    assert "not finite for 2 steps in a row (last at step 2)" in capsys.readouterr().err


def test_guards_by_hand():
    guard = guards.NonFiniteGuard(limit=3)
    for finite in (False, False, True, False, False):
        guard.record(finite, step=1)  # a finite step resets the count
    assert (guard.in_a_row, guard.total) == (2, 4)
    with pytest.raises(guards.TrainingDiverged):
        guard.record(False, step=6)
    model = torch.nn.Linear(2, 2)
    assert guards.first_nonfinite_parameter(model) is None
    with torch.no_grad():
        model.bias[0] = float("inf")
    assert guards.first_nonfinite_parameter(model) == "bias"
    said = []
    watch = guards.NoSignalWatch(said.append, steps=2)
    for metrics in ({"filter/dropped_frac": 1.0}, {"reward/mean": 0.5, "groups/all_correct": 0.5},
                    {"reward/mean": 0.0}, {"groups/all_correct": 1.0}, {"filter/dropped_frac": 1.0}):
        watch.record(metrics)
    assert len(said) == 1 and "no reward signal: check the answer format" in said[0]  # once, after 2 in a row


def test_no_reward_signal_is_warned_once_and_counted(tiny_model_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(guards, "NO_SIGNAL_STEPS", 2)
    run = tmp_path / "run"
    assert _train(tiny_model_dir, run, "algo.filter_tau=0.0") == 0  # a random tiny model: every reward 0
    err = capsys.readouterr().err
    assert err.count("no reward signal: check the answer format") == 1
    assert json.loads((run / "summary.json").read_text())["no_signal_steps"] == 3


# ------------------------------------------------------------------ run directories and seeds


def test_existing_run_dir_is_refused_and_overwrite_clears_it(tiny_model_dir, tmp_path, capsys):
    run = tmp_path / "run"
    assert _train(tiny_model_dir, run, "train.steps=1") == 0
    stale = run / "checkpoints" / "step_000099"
    stale.mkdir()
    assert _train(tiny_model_dir, run, "train.steps=1") == 2
    assert "already holds a run" in capsys.readouterr().err
    assert _train(tiny_model_dir, run, "train.steps=1", "--overwrite") == 0
    assert not stale.exists()
    assert [r["step"] for r in read_metrics(run / "metrics.jsonl")] == [0, 1]


def test_default_run_dir_is_new_per_run_and_printed(tiny_model_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    config = tmp_path / "mine.yaml"
    config.write_text("train:\n  steps: 1\n")
    argv = ["train", str(config), "--no-progress", f"model.path={tiny_model_dir}", *ARGS[:-3], "train.steps=1"]
    assert main(argv) == 0 and main(argv) == 0
    runs = sorted((tmp_path / "runs").iterdir())
    assert len(runs) == 2 and all(r.name.startswith("mine-") for r in runs)
    assert f"run directory: runs/{runs[0].name}" in capsys.readouterr().err


def test_seed_everything_seeds_numpy_python_and_torch():
    import random

    from dashrl.train.run import seed_everything

    draws = []
    for _ in range(2):
        seed_everything(7)
        draws.append((random.random(), float(np.random.rand()), float(torch.rand(1))))
    assert draws[0] == draws[1]


def test_resume_drops_samples_of_steps_past_the_checkpoint(tiny_model_dir, tmp_path):
    run = tmp_path / "run"
    with pytest.MonkeyPatch.context() as mp:
        install("during_step", 3, raise_killed, patch=mp.setattr)
        with pytest.raises(Killed):
            _train(tiny_model_dir, run, "log.samples_every=1")
    samples = run / "samples.jsonl"
    with samples.open("a") as f:
        f.write('{"step": 3, "prompt": "torn')  # as if killed mid-write of a step past the checkpoint
    assert _resume(run, "log.samples_every=1") == 0
    steps = [json.loads(line)["step"] for line in samples.read_text().splitlines()]
    assert steps == sorted(steps) and steps.count(3) == steps.count(1)  # step 3 once, like the others


def test_a_signal_stops_a_whole_study_and_its_run_is_not_taken_as_finished(tmp_path):
    from dashrl.train.signals import Interrupted, finished, raise_if_interrupted

    summary = tmp_path / "summary.json"
    summary.write_text(json.dumps({"steps": 2, "interrupted": "SIGTERM"}))
    assert not finished(summary) and not finished(tmp_path / "missing.json")
    summary.write_text(json.dumps({"steps": 3}))
    assert finished(summary)
    raise_if_interrupted({"steps": 3})
    with pytest.raises(Interrupted) as stopped:
        raise_if_interrupted({"steps": 2, "interrupted": "SIGHUP"})
    assert stopped.value.exit_code == 129


def test_a_run_stopped_before_any_later_evaluation_reports_no_after():
    from dashrl.train.run import format_summary, summarize

    rows = [{"step": 0, "eval/greedy/pass@1": 0.25}, {"step": 1, "time/step": 1.0}]
    summary = summarize(rows, 2.0)
    assert summary["before"] == {"greedy/pass@1": 0.25} and summary["after"] == {}
    assert "greedy/pass@1 %                 25.0           -         -" in format_summary(summary)
    rows.append({"step": 2, "time/step": 1.0, "eval/greedy/pass@1": 0.5})
    assert summarize(rows, 3.0)["after"] == {"greedy/pass@1": 0.5}
