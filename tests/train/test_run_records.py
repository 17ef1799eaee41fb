"""A run's accounting and records: every second of wall_seconds in a named stage, s/step the training
step alone, samples.jsonl, and evaluation records with the prompt as sent and the extracted answer."""

import json

from dashrl.config import load_config
from dashrl.eval.evaluate import evaluate
from dashrl.train.run import prepare, train

FAST = ["algo.group_size=2", "algo.prompts_per_step=2", "train.micro_batch_size=2", "sampling.max_new_tokens=4",
        "eval.num_problems=2", "eval.samples=1", "eval.ks=[1]"]


def _run(tiny_model_dir, tmp_path, *extra):
    config = load_config(overrides=[f"model.path={tiny_model_dir}", f"log.run_dir={tmp_path / 'r'}", *FAST, *extra])
    return train(prepare(config, progress=False)), tmp_path / "r"


def test_stage_seconds_sum_to_wall_time(tiny_model_dir, tmp_path):
    summary, _ = _run(tiny_model_dir, tmp_path, "train.steps=3", "eval.every=2", "log.save_every=1")
    stages = summary["stage_seconds"]
    for name in ("model_load", "evaluation_before", "evaluation_during", "evaluation_after", "checkpoint",
                 "training", "setup", "logging"):
        assert stages[name] > 0, name
    assert abs(sum(stages.values()) - summary["wall_seconds"]) <= 0.02 * summary["wall_seconds"]
    # s/step is the training step alone: evaluation and checkpoints are beside it
    assert abs(summary["train_seconds"] - stages["training"]) <= 0.02 * stages["training"]
    assert abs(summary["seconds_per_step"] - summary["train_seconds"] / 3) < 1e-9


def test_resumed_run_keeps_earlier_stage_seconds(tiny_model_dir, tmp_path):
    first, run = _run(tiny_model_dir, tmp_path, "train.steps=2", "log.save_every=1")
    from dashrl.train.run import resume_config

    config = resume_config(run, ["train.steps=3", *FAST])
    second = train(prepare(config, resume=True, progress=False))
    assert second["stage_seconds"]["evaluation_before"] == first["stage_seconds"]["evaluation_before"]
    assert abs(sum(second["stage_seconds"].values()) - second["wall_seconds"]) <= 0.02 * second["wall_seconds"]


def test_samples_file(tiny_model_dir, tmp_path):
    _, run = _run(tiny_model_dir, tmp_path, "train.steps=4", "log.samples_every=2", "log.save_every=0",
                  "algo.prompts_per_step=3")
    rows = [json.loads(line) for line in (run / "samples.jsonl").read_text().splitlines()]
    assert sorted({r["step"] for r in rows}) == [1, 2, 4]  # after step 1, then every 2
    assert len([r for r in rows if r["step"] == 2]) == 2 * 2  # 2 prompts x G = 2 (of the 3 prompts)
    row = rows[0]
    assert row["prompt"].startswith("Compute ") and isinstance(row["completion"], str)
    for key in ("reward", "advantage", "reason", "extracted", "answer", "id"):
        assert key in row
    step = [r for r in rows if r["step"] == 1]
    assert step[0]["id"] == step[1]["id"] and abs(step[0]["advantage"] + step[1]["advantage"]) < 1e-6  # one group


def test_eval_records_hold_the_prompt_as_sent_and_the_extracted_answer(tiny_model_dir, tmp_path):
    config = load_config(overrides=[f"model.path={tiny_model_dir}", f"log.run_dir={tmp_path / 'r'}", *FAST,
                                    "task.prompt_template=Q: {prompt}A:", "task.answer_format=last_number"])
    trainer = prepare(config, progress=False).trainer
    problems = trainer.task.eval_problems(2, 999)
    result = evaluate(trainer.engine, trainer.task, problems, config.eval, 4, format_prompt=trainer.format_prompt)
    record = result.records[0]
    assert record["prompt"] == "Q: " + problems[0].prompt + "A:" and record["problem"] == problems[0].prompt
    assert record["answer"] == problems[0].answer
    assert "extracted" in record
    # the verifier's extraction, the same as scoring the completion again gives
    assert record["extracted"] == trainer.task.score(record["completion"], problems[0]).extracted


def test_bfloat16_checkpoints_are_smaller_and_load(tiny_model_dir, tmp_path):
    import torch
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    from dashrl.cli import main

    sizes = {}
    for dtype in ("float32", "bfloat16"):
        run = tmp_path / dtype
        assert main(["train", "--no-progress", f"model.path={tiny_model_dir}", f"log.run_dir={run}", *FAST,
                     "train.steps=2", "log.save_every=1", f"checkpoint.dtype={dtype}"]) == 0
        model_dir = run / "checkpoints" / "step_000002" / "model"
        tensors = {k: v for f in model_dir.glob("*.safetensors") for k, v in load_file(f).items()}
        sizes[dtype] = sum(t.numel() * t.element_size() for t in tensors.values())
        loaded = AutoModelForCausalLM.from_pretrained(model_dir, dtype="auto")  # plain transformers, its own dtype
        assert {p.dtype for p in loaded.parameters()} == {getattr(torch, dtype)}
    assert sizes["bfloat16"] * 2 == sizes["float32"]  # every weight in half the bytes
    # a bf16 checkpoint evaluates and resumes
    assert main(["eval", "--no-progress", f"model.path={tmp_path / 'bfloat16' / 'checkpoints' / 'step_000002' / 'model'}",
                 *FAST]) == 0
    assert main(["train", "--no-progress", "--resume", str(tmp_path / "bfloat16"), "train.steps=3"]) == 0


def test_samples_go_to_tensorboard_and_wandb_as_text(tmp_path):
    from dashrl.runlog import RunLog
    from dashrl.train.samples import as_text

    class Recorder:
        def __init__(self):
            self.calls = []

        def add_text(self, tag, text, step):
            self.calls.append((tag, text, step))

        def log(self, data, step):
            self.calls.append((sorted(data), step))

    log = RunLog(tmp_path / "r", load_config(overrides=[f"log.run_dir={tmp_path / 'r'}"]))
    log._tb, log._wandb = Recorder(), Recorder()
    rows = [{"id": "p1", "prompt": "Q?", "completion": c, "reward": r, "advantage": a, "reason": why,
             "extracted": x, "answer": "4"} for c, r, a, why, x in
            [("it is 4", 1.0, 1.0, "correct", "4"), ("5", 0.0, -1.0, "wrong_answer", "5")]]
    import importlib.util

    if importlib.util.find_spec("wandb") is None:  # W&B's table needs the package itself
        log._wandb = None
    log.write_samples(3, rows)
    if log._wandb is not None:
        assert log._wandb.calls == [(["samples"], 3)]
    tag, text, step = log._tb.calls[0]
    assert (tag, step) == ("samples", 3) and text == as_text(3, rows)
    assert "**prompt** (p1, answer '4')" in text and "reward 1.00, advantage +1.00, correct" in text
    assert len((tmp_path / "r" / "samples.jsonl").read_text().splitlines()) == 2
