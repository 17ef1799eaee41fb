"""``dashrl bench``: standard GRPO vs preemptive sampling vs DASH on the same work.

Every variant trains from the same base model, with the same seed, prompts and
number of optimizer steps; only the schedule differs:

- ``grpo``: the reference implementation's schedule, one engine call per
  micro-batch of ``--paper-micro-batch`` completions (the paper: 4).
- ``grpo_tuned``: the same, with the micro-batch that is best for training
  (the config's ``train.micro_batch_size``, e.g. from ``dashrl tune``).
- ``preemptive``: the whole step sampled at the engine's batch size, then
  backpropagated in that micro-batch; no filtering.
- ``dash``: preemptive sampling + gradient filtering (``algo.filter_tau``,
  default 0) + token-budget micro-batches when ``train.micro_batch_tokens`` is set.

A variant runs on the config's ``rollout.engine``; ``NAME@ENGINE`` (e.g.
``dash@vllm``, ``grpo@hf``) picks the engine for that variant, so one bench can
compare schedules on both engines. The table names each variant's engine.

Training seconds exclude evaluation and checkpointing. ``bench.model_shape``,
``bench.completion_tokens`` and ``bench.filter_frac`` make it a timing run on a
randomly initialised model of a given shape, with set completion lengths and a
set filter rate (``dashrl.scaling``; a list of shapes: one bench per shape). A variant whose run
directory already holds a summary for the same resolved config is not re-run.
Writes bench.json, bench.md, breakdown.png (sampling vs gradient-update time,
the paper's breakdown figure) and reward_vs_time.png.
"""

from __future__ import annotations

import json
from pathlib import Path

from dashrl.config import Config, to_yaml, with_overrides
from dashrl.errors import UserError
from dashrl.runlog import read_metrics

VARIANTS = ("grpo", "grpo_tuned", "preemptive", "dash")
ENGINES = ("hf", "vllm")
SAMPLING_STAGES = ("generation", "reward")
UPDATE_STAGES = ("reference", "forward_backward", "optimizer")


def variant_config(base: Config, name: str, out_dir: Path, paper_micro_batch: int = 4) -> Config:
    """The config of one variant (see the module docstring)."""
    rows = base.algo.prompts_per_step * base.algo.group_size
    micro = base.train.micro_batch_size
    engine_batch = min(rows, base.train.generation_batch_size or rows)
    overrides = {
        "grpo": [f"train.micro_batch_size={paper_micro_batch}", f"train.generation_batch_size={paper_micro_batch}",
                 "train.micro_batch_tokens=null", "algo.filter_tau=null"],
        "grpo_tuned": [f"train.generation_batch_size={micro}", "train.micro_batch_tokens=null", "algo.filter_tau=null"],
        "preemptive": [f"train.generation_batch_size={engine_batch}", "train.micro_batch_tokens=null",
                       "algo.filter_tau=null"],
        "dash": [f"train.generation_batch_size={engine_batch}",
                 f"algo.filter_tau={base.algo.filter_tau if base.algo.filter_tau is not None else 0.0}"],
    }
    schedule, _, engine = name.partition("@")
    if schedule not in overrides:
        raise UserError(f"unknown bench variant '{name}'; choose from {', '.join(VARIANTS)} (optionally "
                        "with @hf or @vllm)")
    if engine and engine not in ENGINES:
        raise UserError(f"bench variant '{name}': unknown engine '{engine}'; choose from {', '.join(ENGINES)}")
    common = [f"log.run_dir={out_dir / name}", "log.save_every=0", "eval.every=0"]
    if engine:
        common.append(f"rollout.engine={engine}")
    if base.bench.timing:
        from dashrl.scaling import timing_overrides

        common += timing_overrides(base)
    return with_overrides(base, overrides[schedule] + common)


def _run_variant(config: Config, progress: bool) -> list[dict]:
    from dashrl.rollout.factory import close_engine
    from dashrl.train.run import prepare, train

    run_dir = Path(config.log.run_dir)
    from dashrl.train.signals import finished, raise_if_interrupted

    done = finished(run_dir / "summary.json") and (run_dir / "config.yaml").is_file()
    if not (done and (run_dir / "config.yaml").read_text() == to_yaml(config)):
        setup = prepare(config, progress=progress)
        if config.bench.timing:  # set lengths and synthetic filter-rate rewards
            from dashrl.scaling import apply_timing

            apply_timing(setup.trainer, config)
        try:
            raise_if_interrupted(train(setup, progress=progress))  # a signal stops the whole bench
        finally:
            close_engine(setup.trainer.engine)  # one vLLM engine per process at a time
    return read_metrics(run_dir / "metrics.jsonl")


def stage_seconds(rows: list[dict]) -> dict[str, float]:
    """Training seconds per stage summed over a run's step rows (evaluation and checkpoints left out)."""
    stages: dict[str, float] = {}
    for r in rows:
        if "time/step" not in r:
            continue
        for key, value in r.items():
            if key.startswith("time/") and key not in ("time/step", "time/evaluation", "time/checkpoint"):
                stages[key[5:]] = stages.get(key[5:], 0.0) + value
    return stages


def curve_vs_seconds(rows: list[dict], key: str) -> list[tuple[float, float]]:
    """(training seconds so far, row[key]) for every step row that logged ``key``."""
    clock, curve = 0.0, []
    for r in rows:
        if "time/step" not in r:
            continue
        clock += r["time/step"] - r.get("time/evaluation", 0.0) - r.get("time/checkpoint", 0.0)
        if r.get(key) is not None:
            curve.append((clock, r[key]))
    return curve


def variant_result(name: str, rows: list[dict], engine: str = "hf") -> dict:
    """Per-variant numbers for bench.json, read from the run's metrics."""
    from dashrl.train.run import summarize

    steps = [r for r in rows if "time/step" in r]
    summary = summarize(rows, wall_seconds=0.0)
    stages = stage_seconds(rows)
    curve = curve_vs_seconds(rows, "reward/mean")
    fb_rate = sum(r.get("tokens/trained", 0) for r in steps) / max(stages.get("forward_backward", 0.0), 1e-9)
    return {
        "variant": name,
        "engine": engine,
        "steps": summary["steps"],
        "train_seconds": summary["train_seconds"],
        "seconds_by_stage": stages,
        "sampling_seconds": sum(stages.get(s, 0.0) for s in SAMPLING_STAGES),
        "update_seconds": sum(stages.get(s, 0.0) for s in UPDATE_STAGES),
        "tokens_generated": summary["tokens_generated"],
        "tokens_trained": summary["tokens_trained"],
        "filtered_frac": summary["filtered_frac"],
        "skipped_steps": summary["skipped_steps"],
        "forward_backward_seconds_saved": _saved_seconds(steps, fb_rate),
        "greedy_pass@1": summary["after"].get("greedy/pass@1"),
        "sampled_pass@1": summary["after"].get("sampled/pass@1"),
        "base_greedy_pass@1": summary["before"].get("greedy/pass@1"),
        "mean_completion_length": summary["after"].get("greedy/mean_length"),
        "reward_vs_seconds": curve,
    }


def _saved_seconds(steps: list[dict], tokens_per_second: float) -> float:
    """Forward/backward time the filtered samples would have cost, at this run's measured rate."""
    dropped = 0.0
    for r in steps:
        trained = r.get("tokens/trained", 0)
        frac = r.get("filter/dropped_frac", 0.0)
        if frac < 1:
            dropped += trained * frac / (1 - frac)  # tokens scale with rows (approximately)
    return dropped / tokens_per_second if tokens_per_second > 0 else 0.0


def run_bench(base: Config, variants: list[str], out_dir: Path, progress: bool = True,
              paper_micro_batch: int = 4) -> dict:
    from dashrl.rollout.factory import check_engine

    if isinstance(base.bench.model_shape, (str, dict)):  # one shape: a random-init model of it
        from dashrl.models.shapes import ensure_shape_model

        base = with_overrides(base, [f"model.path={ensure_shape_model(base.bench.model_shape, base.train.seed)}"])
    configs = {name: variant_config(base, name, out_dir, paper_micro_batch) for name in variants}  # validate all first
    for config in configs.values():
        check_engine(config)
    results = {}
    for name, config in configs.items():
        if progress:
            print(f"== {name}: generation batch {config.train.generation_batch_size}, micro-batch "
                  f"{config.train.micro_batch_tokens and str(config.train.micro_batch_tokens) + ' tokens' or config.train.micro_batch_size}"
                  f", filter tau {config.algo.filter_tau}")
        results[name] = variant_result(name, _run_variant(config, progress), config.rollout.engine)
    report = {"variants": results, "ratios": _ratios(results)}
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "bench.json").write_text(json.dumps(report, indent=2) + "\n")
    (out_dir / "bench.md").write_text(format_table(report) + "\n")
    plot_breakdown(results, out_dir / "breakdown.png")
    plot_reward_vs_time(results, out_dir / "reward_vs_time.png")
    return report


def _ratios(results: dict) -> dict:
    """Training-time ratios of the faster schedules to GRPO's, on the same engine suffix (``dash@vllm/grpo@vllm``)."""
    out = {}
    suffixes = sorted({"@" + name.partition("@")[2] if "@" in name else "" for name in results})
    for sfx in suffixes:
        for fast in ("preemptive", "dash"):
            for slow in ("grpo", "grpo_tuned"):
                f, s = fast + sfx, slow + sfx
                if f in results and s in results and results[s]["train_seconds"] > 0:
                    out[f"{f}/{s}"] = results[f]["train_seconds"] / results[s]["train_seconds"]
    return out


def _pct(value) -> str:
    return "-" if value is None else f"{value * 100:.1f}"


def format_table(report: dict) -> str:
    results = report["variants"]
    base = results.get("grpo") or next(iter(results.values()))
    lines = [
        "| variant | engine | train s | s/step | time vs grpo | sampling s | update s | tokens generated "
        "| tokens trained | filtered | fwd/bwd s saved | greedy pass@1 % | sampled pass@1 % | mean length |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results.values():
        lines.append(
            f"| {r['variant']} | {r.get('engine', 'hf')} | {r['train_seconds']:.1f} | {r['train_seconds'] / max(r['steps'], 1):.2f} "
            f"| {r['train_seconds'] / max(base['train_seconds'], 1e-9) * 100:.0f}% | {r['sampling_seconds']:.1f} "
            f"| {r['update_seconds']:.1f} | {r['tokens_generated']} | {r['tokens_trained']} "
            f"| {r['filtered_frac'] * 100:.0f}% | {r['forward_backward_seconds_saved']:.1f} "
            f"| {_pct(r['greedy_pass@1'])} | {_pct(r['sampled_pass@1'])} | {r['mean_completion_length'] or 0:.1f} |"
        )
    lines.append("")
    lines.append(f"base model greedy pass@1: {_pct(base['base_greedy_pass@1'])} %")
    for key, value in report["ratios"].items():
        fast, slow = key.split("/")
        lines.append(f"{fast} takes {value * 100:.1f}% of {slow}'s training time ({(1 - value) * 100:.0f}% less)")
    return "\n".join(lines)


def plot_breakdown(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(results)
    sampling = [results[n]["sampling_seconds"] for n in names]
    update = [results[n]["update_seconds"] for n in names]
    other = [results[n]["train_seconds"] - s - u for n, s, u in zip(names, sampling, update)]
    fig, ax = plt.subplots(figsize=(max(6, 0.9 * len(names)), 4))
    ax.bar(names, sampling, label="sampling (generation + reward)", color="#4C72B0")
    ax.bar(names, update, bottom=sampling, label="gradient updates (fwd/bwd + ref + optimizer)", color="#DD8452")
    ax.bar(names, other, bottom=[s + u for s, u in zip(sampling, update)], label="other (weight sync, ...)", color="#999999")
    ax.set_ylabel("training seconds")
    if len(names) > 4:  # long variant names would overlap
        plt.setp(ax.get_xticklabels(), rotation=30, ha="right")
    ax.set_title("Where training time goes")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_reward_vs_time(results: dict, path: Path, window: int = 5) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for name, r in results.items():
        xs = [x for x, _ in r["reward_vs_seconds"]]
        ys = [y for _, y in r["reward_vs_seconds"]]
        smooth = [sum(ys[max(0, i - window + 1) : i + 1]) / len(ys[max(0, i - window + 1) : i + 1]) for i in range(len(ys))]
        ax.plot(xs, smooth, label=name)
    ax.set_xlabel("training seconds")
    ax.set_ylabel(f"mean reward (moving average of {window} steps)")
    ax.set_title("Reward vs wall-clock")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
