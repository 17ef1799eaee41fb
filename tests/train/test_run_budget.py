"""train.max_seconds: a run stops after the step at which its training seconds reach the budget."""

import json

from dashrl.config import load_config
from dashrl.train.run import prepare, train


def test_run_stops_when_training_time_is_spent_and_still_finishes_properly(tiny_model_dir, tmp_path):
    config = load_config(overrides=[f"model.path={tiny_model_dir}", f"log.run_dir={tmp_path / 'run'}", "train.steps=50",
                                    "train.max_seconds=0.001", "algo.group_size=2", "algo.prompts_per_step=2",
                                    "train.micro_batch_size=2", "sampling.max_new_tokens=4", "eval.num_problems=2",
                                    "eval.samples=0", "eval.ks=[1]", "log.save_every=0"])
    summary = train(prepare(config, progress=False), progress=False)
    # any step takes more than 1 ms, so the first step spends the budget: it is the last, evaluated and saved
    assert summary["steps"] == 1 and summary["train_seconds"] >= 0.001
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [0, 1] and "eval/greedy/pass@1" in rows[1]
    assert (tmp_path / "run" / "checkpoints" / "step_000001").is_dir()
