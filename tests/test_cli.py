"""The command line: a short training run end to end, resume, eval, and bad input."""

import json

import pytest
from transformers import AutoModelForCausalLM, AutoTokenizer

from dashrl.cli import main

FAST = ["algo.group_size=2", "algo.prompts_per_step=2", "train.micro_batch_size=2", "algo.filter_tau=null",
        "sampling.max_new_tokens=8", "eval.num_problems=4", "eval.samples=2", "eval.ks=[1,2]"]


def _train(tiny_model_dir, run_dir, *extra):
    return main(["train", "--no-progress", f"model.path={tiny_model_dir}", f"log.run_dir={run_dir}", *FAST, *extra])


def _rows(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_train_writes_metrics_checkpoint_summary_and_resumes(tiny_model_dir, tmp_path, capsys):
    run = tmp_path / "run"
    assert _train(tiny_model_dir, run, "train.steps=2", "log.save_every=1") == 0
    out = capsys.readouterr().out
    assert "before RL" in out and "greedy/pass@1" in out
    rows = _rows(run)
    assert [r["step"] for r in rows] == [0, 1, 2]  # baseline eval, then one line per step
    for key in ("reward/mean", "reward/accuracy", "completion/mean_length", "loss", "kl", "clip_frac",
                "time/step", "time/generation", "time/forward_backward"):
        assert key in rows[1], key
    assert "eval/greedy/pass@1" in rows[0] and "eval/greedy/pass@1" in rows[2]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["steps"] == 2 and set(summary["before"]) == set(summary["after"])
    assert abs(sum(v["share"] for v in summary["stage_shares"].values()) - 1) < 1e-6
    latest = run / "checkpoints" / (run / "checkpoints" / "latest").read_text().strip()
    assert latest.name == "step_000002"
    AutoModelForCausalLM.from_pretrained(latest / "model")  # plain transformers loads it
    AutoTokenizer.from_pretrained(latest / "model")

    assert main(["train", "--no-progress", "--resume", str(run), "train.steps=4"]) == 0
    assert [r["step"] for r in _rows(run)] == [0, 1, 2, 3, 4]
    assert (run / "checkpoints" / "latest").read_text().strip() == "step_000004"


def test_resume_continues_exactly_like_an_uninterrupted_run(tiny_model_dir, tmp_path):
    straight, split = tmp_path / "straight", tmp_path / "split"
    assert _train(tiny_model_dir, straight, "train.steps=4", "eval.every=0") == 0
    assert _train(tiny_model_dir, split, "train.steps=2", "log.save_every=2") == 0
    # drop the step-2 checkpoint's successor lines as if the run had crashed after saving
    assert main(["train", "--no-progress", "--resume", str(split), "train.steps=4"]) == 0
    a = [r for r in _rows(straight) if r["step"] in (3, 4)]
    b = [r for r in _rows(split) if r["step"] in (3, 4)]
    for x, y in zip(a, b):
        assert x["reward/mean"] == y["reward/mean"] and x["completion/mean_length"] == y["completion/mean_length"]
        assert x["loss"] == pytest.approx(y["loss"], rel=1e-5, abs=1e-7)


def test_eval_command_writes_per_problem_results(tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "eval.jsonl"
    assert main(["eval", "--no-progress", f"model.path={tiny_model_dir}", *FAST, "--out", str(out)]) == 0
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(records) == 4 + 4 * 2  # greedy once + 2 samples, for 4 problems
    assert {"id", "prompt", "completion", "score", "reason"} <= set(records[0])
    assert "sampled/pass@2" in capsys.readouterr().out


@pytest.mark.parametrize("args, message", [
    (["train.stepz=3"], "unknown config key 'train.stepz' (did you mean 'train.steps'?)"),
    (["train.steps=-1"], "train.steps = -1"),
    (["missing.yaml"], "config file not found: missing.yaml"),
    (["model.path=/no/such/model"], "model path does not exist: /no/such/model"),
    (["task.name=testbde"], "unknown task 'testbde' (did you mean 'testbed'?)"),
])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(args, message, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "--no-progress", f"log.run_dir={run}", *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("dashrl: error: ") and message in err and err.count("\n") == 1
    assert "Traceback" not in err
    assert not run.exists()


def test_resume_without_checkpoint_is_a_clear_error(tmp_path, capsys):
    assert main(["train", "--resume", str(tmp_path)]) == 2
    assert "not a run directory" in capsys.readouterr().err
