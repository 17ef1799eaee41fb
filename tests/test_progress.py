"""Progress and quiet: bars for evaluation and training, silenced everywhere by --no-progress or
log.progress=false (the GGUF loader's own bar included, in the CLI and the Python API), a bar that
honours train.max_seconds, and a line when the time limit ends a run."""

import pytest

from dashrl.cli import main
from dashrl.config import load_config
from dashrl.progress import set_library_progress
from dashrl.train.run import _bar_total, format_summary, prepare, train

FAST = ["algo.group_size=2", "algo.prompts_per_step=2", "train.micro_batch_size=2", "sampling.max_new_tokens=4",
        "eval.num_problems=2", "eval.samples=1", "eval.ks=[1]", "log.save_every=0"]


@pytest.fixture(autouse=True)
def _restore_library_bars():
    yield
    set_library_progress(True)


def test_bars_show_by_default_gguf_and_evaluation_included(tiny_gguf, tmp_path, capfd):
    assert main(["train", f"model.path={tiny_gguf}", f"log.run_dir={tmp_path / 'r'}", "train.steps=1", *FAST]) == 0
    err = capfd.readouterr().err
    for bar in ("de-quantizing GGUF tensors", "eval before RL", "eval after RL", "RL: 100%"):
        assert bar in err, bar


@pytest.mark.parametrize("switch", [["--no-progress"], ["log.progress=false"]])
def test_no_progress_silences_every_bar_in_the_cli(tiny_gguf, tmp_path, capfd, switch):
    assert main(["train", *switch, f"model.path={tiny_gguf}", f"log.run_dir={tmp_path / 'r'}", "train.steps=1",
                 *FAST]) == 0
    assert main(["eval", *switch, f"model.path={tiny_gguf}", *FAST]) == 0
    err = capfd.readouterr().err
    assert "%|" not in err and "GGUF" not in err, err


def test_python_api_follows_log_progress(tiny_gguf, tmp_path, capfd):
    config = load_config(overrides=[f"model.path={tiny_gguf}", f"log.run_dir={tmp_path / 'r'}", "train.steps=1",
                                    "log.progress=false", *FAST])
    train(prepare(config))
    assert "%|" not in capfd.readouterr().err


def test_bar_total_follows_the_time_limit():
    config = load_config(overrides=["train.steps=40", "train.max_seconds=100"])
    # 10 steps took 50 s: 50 s left at 5 s/step -> 10 more steps, so 20 in all (not 40)
    assert _bar_total(config, step=10, steps_done=10, session_seconds=50.0, trained_seconds=50.0) == 20
    assert _bar_total(config, step=10, steps_done=10, session_seconds=5.0, trained_seconds=5.0) == 40  # fits
    assert _bar_total(config, step=10, steps_done=10, session_seconds=120.0, trained_seconds=120.0) == 11
    assert _bar_total(load_config(overrides=["train.steps=40"]), 10, 10, 50.0, 50.0) == 40


def test_time_limit_line(tiny_model_dir, tmp_path, capfd):
    config = load_config(overrides=[f"model.path={tiny_model_dir}", f"log.run_dir={tmp_path / 'r'}", "train.steps=50",
                                    "train.max_seconds=0.000001", *FAST])
    summary = train(prepare(config, progress=True))
    assert summary["steps"] == 1
    line = "stopped by train.max_seconds=1e-06: 1 of 50 steps"
    assert line in summary["stopped"] and line in format_summary(summary)
    assert f"dashrl: {line}" in capfd.readouterr().err
