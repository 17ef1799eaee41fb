"""dashrl tune: the recommendation on hand-made curves, the measurements, and the command end to end."""

import pytest
from transformers import AutoModelForCausalLM, AutoTokenizer

from dashrl.cli import main
from dashrl.config import load_config
from dashrl.errors import UserError
from dashrl.rollout.engine import SamplingParams
from dashrl.rollout.hf_engine import HFEngine
from dashrl.tune import (candidate_sizes, make_samples, measure_generation, measure_training, recommend,
                         write_tuned_config)


def _gen(sizes, tps):
    return [{"batch_size": b, "tokens_per_s": t, "seconds_per_call": b / t, "completions_per_s": b / b}
            for b, t in zip(sizes, tps)]


def _train(sizes, tps, mem=None):
    mem = mem or [None] * len(sizes)
    return [{"micro_batch_size": m, "tokens_per_s": t, "seconds_per_micro_batch": m / t, "samples_per_s": 1.0,
             "peak_memory_bytes": x, "memory_kind": "cuda"} for m, t, x in zip(sizes, tps, mem)]


GEN = _gen([1, 2, 4, 8, 16, 32], [100, 190, 360, 700, 1300, 1320])
TRAIN = _train([1, 2, 4, 8, 16], [100, 180, 250, 260, 262])


def test_recommend_hand_worked_curves():
    # gen: best 1320 at 32; 1300 at 16 is within 5% but 32 is larger -> 32.
    # train: 90% of 262 = 235.8; first size reaching it is 4 (250).
    rec = recommend(GEN, TRAIN, rows_per_step=64, group_size=4, memory_limit_bytes=None)
    assert rec["generation_batch_size"] == 32 and rec["micro_batch_size"] == 4
    assert rec["ratio"] == 8
    assert rec["generation_speedup"] == pytest.approx(13.2)
    assert rec["training_speedup"] == pytest.approx(2.5)
    assert "batch 32" in rec["explanation"] and "micro-batches of 4" in rec["explanation"]


def test_recommend_prefers_larger_within_5_percent_only():
    gen = _gen([1, 2, 4, 8], [100, 200, 400, 370])  # 370 < 0.95 * 400 = 380
    assert recommend(gen, TRAIN, 64, 4, None)["generation_batch_size"] == 4
    gen = _gen([1, 2, 4, 8], [100, 200, 400, 385])  # 385 >= 380 -> the larger one
    assert recommend(gen, TRAIN, 64, 4, None)["generation_batch_size"] == 8


def test_recommend_caps_generation_at_rows_per_step():
    rec = recommend(GEN, TRAIN, rows_per_step=16, group_size=4, memory_limit_bytes=None)
    assert rec["generation_batch_size"] == 16
    assert "a whole step (16 completions)" in rec["explanation"]


def test_recommend_memory_limit_excludes_sizes():
    train = _train([1, 2, 4, 8, 16], [100, 180, 250, 400, 500], mem=[10, 20, 40, 80, 160])
    rec = recommend(GEN, train, 64, 4, memory_limit_bytes=100)
    # without the limit: best 500 at 16, 90% = 450 -> 16; with it only 1..8 fit: best 400 -> 8
    assert rec["micro_batch_size"] == 8 and rec["excluded_by_memory"] == [16]
    assert recommend(GEN, train, 64, 4, None)["micro_batch_size"] == 16
    with pytest.raises(UserError, match="memory limit"):
        recommend(GEN, train, 64, 4, memory_limit_bytes=5)


def test_recommend_respects_group_divisibility():
    gen = _gen([1, 2, 3, 6, 12, 24], [100, 200, 300, 600, 1200, 5000])
    train = _train([1, 2, 3, 4, 6], [100, 150, 200, 500, 260])
    # G = 6: 24 is a multiple, 4 neither divides 6 nor is a multiple of it -> excluded
    rec = recommend(gen, train, rows_per_step=24, group_size=6, memory_limit_bytes=None)
    assert rec["generation_batch_size"] == 24 and rec["micro_batch_size"] == 6
    assert candidate_sizes(24, 6) == [1, 2, 3, 6, 12, 24]
    assert candidate_sizes(256, 8) == [1, 2, 4, 8, 16, 32, 64, 128, 256]


def test_recommend_never_samples_less_than_a_micro_batch():
    gen = _gen([1, 2, 4, 8], [400, 300, 200, 100])
    train = _train([1, 2, 4, 8], [100, 200, 300, 400])
    rec = recommend(gen, train, 64, 4, None)
    assert rec["micro_batch_size"] == 8 and rec["generation_batch_size"] == 8


def test_write_tuned_config_sets_the_recommendation(tmp_path):
    config = load_config(None, ["train.micro_batch_tokens=512"])
    rec = recommend(GEN, TRAIN, rows_per_step=256, group_size=8, memory_limit_bytes=None)
    path = write_tuned_config(config, rec, tmp_path / "sub" / "tuned.yaml")
    assert path.read_text().startswith(f"# dashrl train {path}\n# written by dashrl tune")
    tuned = load_config(path)
    assert (tuned.train.generation_batch_size, tuned.train.micro_batch_size) == (32, 4)
    assert tuned.train.micro_batch_tokens is None  # a token budget would override micro_batch_size


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    return model, tokenizer, HFEngine(AutoModelForCausalLM.from_pretrained(tiny_model_dir), tokenizer)


def test_measurements_return_one_row_per_size_with_positive_throughput(tiny):
    model, tokenizer, engine = tiny
    sampling = SamplingParams(max_new_tokens=4)
    prompts = ["Compute 1+2.", "Compute 3*4-5."]
    gen = measure_generation(engine, prompts, 2, [1, 2, 4], sampling)
    assert [r["batch_size"] for r in gen] == [1, 2, 4]
    assert all(r["tokens_per_s"] > 0 and r["seconds_per_call"] > 0 and r["completions_per_s"] > 0 for r in gen)
    with pytest.raises(ValueError):
        measure_generation(engine, prompts, 4, [3], sampling)
    samples = make_samples(engine, prompts, 2, 4, sampling)
    assert len(samples) == 4 and {s.advantage for s in samples} <= {-1.0, 1.0}
    train = measure_training(model, tokenizer, samples, [1, 2, 4], temperature=1.0, repeats=1)
    assert [r["micro_batch_size"] for r in train] == [1, 2, 4]
    assert all(r["tokens_per_s"] > 0 and r["seconds_per_micro_batch"] > 0 for r in train)
    assert all(p.grad is None for p in model.parameters())


FAST = ["algo.group_size=2", "algo.prompts_per_step=2", "train.micro_batch_size=2", "sampling.max_new_tokens=4"]


def test_tune_command_prints_curves_and_writes_a_loadable_config(tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "tuned.yaml"
    assert main(["tune", "--no-progress", f"model.path={tiny_model_dir}", *FAST, "--write", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "generation (completions per engine call)" in printed and "training (forward + backward" in printed
    assert "train.generation_batch_size" in printed and "#" in printed
    lines = out.read_text().splitlines()
    assert lines[0] == f"# dashrl train {out}" and lines[1].startswith("# written by dashrl tune")
    config = load_config(out)
    gen, micro = config.train.generation_batch_size, config.train.micro_batch_size
    assert gen in (1, 2, 4) and micro in (1, 2, 4) and gen >= micro
    assert f"train.generation_batch_size = {gen}" in printed and f"train.micro_batch_size      = {micro}" in printed
    assert config.algo.group_size == 2 and config.model.path == str(tiny_model_dir)


@pytest.mark.parametrize("args, message", [
    (["train.lrr=1"], "unknown config key 'train.lrr'"),
    (["--max-batch", "0"], "--max-batch must be at least 1"),
    (["--max-micro", "0"], "--max-micro must be at least 1"),
    (["model.path=/no/such/model"], "model path does not exist"),
])
def test_tune_bad_input_is_one_line_exit_2(args, message, capsys):
    assert main(["tune", "--no-progress", *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("dashrl: error: ") and message in err and err.count("\n") == 1


def test_tune_with_lora_measures_the_adapter_backward_and_says_so(tiny_model_dir, capsys):
    args = ["tune", "--no-progress", f"model.path={tiny_model_dir}", *FAST, "algo.prompts_per_step=4"]
    assert main([*args, "model.lora.enabled=true", "model.lora.r=4", "--quick", "--max-micro", "4",
                 "--max-batch", "4"]) == 0
    lora = capsys.readouterr().out
    assert "training (forward + backward per micro-batch: backward through the LoRA adapters only (r=4" in lora
    assert main([*args, "--quick", "--max-micro", "2", "--max-batch", "2"]) == 0
    full = capsys.readouterr().out
    assert "backward through all weights" in full

    def sizes(printed, header):
        block = printed.split(header)[1].split("\n\n")[0].splitlines()[2:]
        return [int(line.split()[0]) for line in block if line.strip() and line.split()[0].isdigit()]

    # both curves stop at their bounds
    assert sizes(lora, "training (") == [1, 2, 4] and sizes(lora, "generation (") == [1, 2, 4]
    assert sizes(full, "training (") == [1, 2] and sizes(full, "generation (") == [1, 2]


def test_quick_mode_caps_the_micro_batches():
    from dashrl.tune import planned_sizes

    config = load_config(overrides=["algo.group_size=8", "algo.prompts_per_step=32"])
    assert planned_sizes(config)[1][-1] == 64
    assert planned_sizes(config, quick=True)[1][-1] == 16
    assert planned_sizes(config, max_batch=16, max_micro=8) == ([1, 2, 4, 8, 16], [1, 2, 4, 8])
