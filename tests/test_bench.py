"""dashrl bench on the tiny model: every variant runs the same steps; outputs are written."""

import json

import pytest

from dashrl.bench import variant_config
from dashrl.cli import main
from dashrl.config import load_config

FAST = ["algo.group_size=2", "algo.prompts_per_step=4", "train.micro_batch_size=4", "train.steps=2",
        "sampling.max_new_tokens=6", "eval.num_problems=4", "eval.samples=0", "eval.ks=[1]"]


def test_variant_configs(tmp_path):
    base = load_config(overrides=["algo.prompts_per_step=8", "algo.group_size=4", "train.micro_batch_size=8",
                                  "train.micro_batch_tokens=512", "algo.filter_tau=0.1"])
    grpo = variant_config(base, "grpo", tmp_path)
    assert (grpo.train.micro_batch_size, grpo.train.generation_batch_size, grpo.algo.filter_tau) == (4, 4, None)
    assert grpo.train.micro_batch_tokens is None
    tuned = variant_config(base, "grpo_tuned", tmp_path)
    assert (tuned.train.micro_batch_size, tuned.train.generation_batch_size) == (8, 8)
    pre = variant_config(base, "preemptive", tmp_path)
    assert (pre.train.generation_batch_size, pre.algo.filter_tau) == (32, None)
    dash = variant_config(base, "dash", tmp_path)
    assert (dash.train.generation_batch_size, dash.algo.filter_tau, dash.train.micro_batch_tokens) == (32, 0.1, 512)
    assert {c.train.steps for c in (grpo, tuned, pre, dash)} == {base.train.steps}
    assert dash.log.run_dir == str(tmp_path / "dash")


def test_bench_runs_variants_and_writes_report(tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "bench"
    args = ["bench", "--no-progress", "--out", str(out), "--paper-micro-batch", "2", f"model.path={tiny_model_dir}", *FAST]
    assert main(args) == 0
    report = json.loads((out / "bench.json").read_text())
    assert set(report["variants"]) == {"grpo", "grpo_tuned", "preemptive", "dash"}
    for r in report["variants"].values():
        assert r["steps"] == 2 and r["train_seconds"] > 0 and r["tokens_generated"] > 0
        assert len(r["reward_vs_seconds"]) == 2
    assert "dash/grpo" in report["ratios"]
    for name in ("bench.md", "breakdown.png", "reward_vs_time.png"):
        assert (out / name).stat().st_size > 0
    assert "dash takes" in capsys.readouterr().out
    # a second run reuses the finished variants instead of training again
    mtime = (out / "dash" / "summary.json").stat().st_mtime
    assert main(args) == 0
    assert (out / "dash" / "summary.json").stat().st_mtime == mtime


def test_unknown_variant_is_a_clear_error(capsys, tmp_path):
    assert main(["bench", "--variants", "grpo,fast", "--out", str(tmp_path / "b")]) == 2
    assert "unknown bench variant 'fast'" in capsys.readouterr().err


def test_stage_seconds_and_curves_leave_out_evaluation_and_checkpoints():
    from dashrl.bench import curve_vs_seconds, stage_seconds

    rows = [{"step": 0, "eval/greedy/pass@1": 0.3},
            {"step": 1, "time/step": 2.0, "time/evaluation": 0.5, "time/generation": 1.0, "reward/mean": 0.1},
            {"step": 2, "time/step": 1.0, "time/checkpoint": 0.2, "time/generation": 0.6, "reward/mean": 0.3}]
    # generation 1.0 + 0.6 = 1.6; evaluation and checkpoint are not training stages
    assert stage_seconds(rows) == {"generation": pytest.approx(1.6)}
    # training clock: 2.0 - 0.5 = 1.5 after step 1, then + 1.0 - 0.2 = 2.3 after step 2
    assert curve_vs_seconds(rows, "reward/mean") == [(1.5, 0.1), (pytest.approx(2.3), 0.3)]
    assert curve_vs_seconds(rows, "missing") == []


def test_variant_engine_suffix_sets_the_engine(tmp_path):
    base = load_config(overrides=["algo.group_size=4", "algo.prompts_per_step=4"])
    on_vllm = variant_config(base, "dash@vllm", tmp_path)
    assert on_vllm.rollout.engine == "vllm" and on_vllm.log.run_dir == str(tmp_path / "dash@vllm")
    assert on_vllm.algo.filter_tau == 0.0  # still the dash schedule
    assert variant_config(base, "grpo", tmp_path).rollout.engine == "hf"
    with pytest.raises(Exception, match="unknown engine 'sglang'"):
        variant_config(base, "dash@sglang", tmp_path)


def test_table_names_each_variants_engine():
    from dashrl.bench import _ratios, format_table

    def result(name, engine, seconds):
        return {"variant": name, "engine": engine, "steps": 2, "train_seconds": seconds, "sampling_seconds": 1.0,
                "update_seconds": 1.0, "tokens_generated": 10, "tokens_trained": 10, "filtered_frac": 0.0,
                "forward_backward_seconds_saved": 0.0, "greedy_pass@1": None, "sampled_pass@1": None,
                "base_greedy_pass@1": None, "mean_completion_length": None}

    results = {"grpo": result("grpo", "hf", 10.0), "dash": result("dash", "hf", 5.0),
               "grpo@vllm": result("grpo@vllm", "vllm", 8.0), "dash@vllm": result("dash@vllm", "vllm", 2.0)}
    ratios = _ratios(results)
    assert ratios == {"dash/grpo": 0.5, "dash@vllm/grpo@vllm": 0.25}
    table = format_table({"variants": results, "ratios": ratios})
    assert "| dash@vllm | vllm |" in table and "| grpo | hf |" in table


def test_scaling_times_every_shape_with_set_lengths_and_filter_rate(tmp_path, capsys):
    out = tmp_path / "scaling"
    args = ["bench", "--no-progress", "--out", str(out), "--paper-micro-batch", "4",
            "bench.model_shape=[{hidden: 32, layers: 1}, {hidden: 64, layers: 1}]", "bench.completion_tokens=[3,6]",
            "bench.filter_frac=0.25", "algo.group_size=4", "algo.prompts_per_step=4", "train.micro_batch_size=8",
            "train.steps=1"]
    assert main(args) == 0
    result = json.loads((out / "scaling.json").read_text())
    assert [r["size"] for r in result["sizes"]] == ["h32-l1", "h64-l1"]
    assert result["command"].startswith("dashrl bench 'bench.model_shape=[{hidden: 32, layers: 1}, ")
    small, large = result["sizes"]
    assert small["parameters"] < large["parameters"]
    for size in result["sizes"]:
        v = size["variants"]
        # the same planned lengths for every schedule: 16 completions of 3..6 tokens each
        assert len({x["tokens_generated"] for x in v.values()}) == 1 and 48 <= v["dash"]["tokens_generated"] <= 96
        # 1 of 4 prompts filtered (f = 0.25), only by DASH
        assert v["dash"]["filtered_frac"] == 0.25 and v["grpo"]["filtered_frac"] == 0.0
        assert size["ratios"]["dash/grpo"] == pytest.approx(v["dash"]["train_seconds"] / v["grpo"]["train_seconds"])
    table = (out / "scaling.md").read_text()
    assert "| h64-l1 |" in table and "dash/grpo" in table and (out / "h32-l1" / "bench.json").is_file()


def test_bad_timing_settings_fail_in_one_line(capsys):
    assert main(["bench", "bench.completion_tokens=[9,3]"]) == 2
    assert "completion_tokens" in capsys.readouterr().err
    assert main(["bench", "--no-progress", "bench.model_shape={hidden: 64}"]) == 2
    assert "needs hidden and layers" in capsys.readouterr().err
