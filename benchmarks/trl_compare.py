"""dashrl vs TRL's GRPOTrainer: same model, same task, same hyperparameters, same number of steps.

What it compares
----------------
It trains the built-in testbed model (the cached base checkpoint, a tiny Qwen2 model, see
``dashrl/testbed/pretrain.py``) on the built-in arithmetic task for N optimizer steps, once with
TRL's ``GRPOTrainer`` (CPU, ``use_vllm=False``, i.e. transformers ``generate``) and once per dashrl
config given (``--dashrl-configs``). Each run is then evaluated with dashrl's own held-out
evaluation (``dashrl.eval.evaluate.evaluate``: greedy pass@1 and sampled pass@1 with 4 samples at
temperature 1, on ``--eval-problems`` problems of eval seed 999, evaluation seed 0). It reports, in
one table, the wall time of the N training steps, seconds per step, and final held-out accuracy,
plus the ratio of each dashrl variant's wall time to TRL's.

How the settings were matched
-----------------------------
Both sides use:

* the same prompts in the same order: the first N x M problems of
  ``ArithmeticTask().train_stream(seed=1)`` (TRL: ``shuffle_dataset=False``; raw prompt text,
  no chat template; the reward function reads the dataset's ``answer`` column);
* the same reward: ``dashrl.rewards.math.score_math`` (1 if the last ``\\boxed{}`` matches);
* M prompts x G completions per optimizer step, sampled at temperature 1 with top-k / top-p off,
  at most ``--max-new-tokens`` tokens, cut at EOS;
* group advantages (r - mean) / (sample std + 1e-4) (TRL ``scale_rewards="group"``);
* the "grpo" loss (token mean per sequence, then mean over the step's M x G sequences; exact
  under gradient accumulation on both sides since all TRL micro-batches are equally large);
* one update per sampled batch (TRL ``num_iterations=1``; the PPO ratio is 1, so TRL's
  clipping never acts), KL coefficient ``--beta`` (default 0: no reference model on either side);
* AdamW (``optim="adamw_torch"``, the same ``torch.optim.AdamW`` dashrl uses) with lr ``--lr``,
  betas (0.9, 0.99), eps 1e-8, weight decay 0; 5 steps of linear warmup then constant
  (``constant_with_warmup``); gradient norm clipped to 1.0; float32 (``bf16=False``,
  ``fp16=False``), no gradient checkpointing (TRL turns it on by default), seed 0.

TRL runs at its fastest schedule for this setting: ``generation_batch_size = M x G`` (one
``generate`` call per optimizer step), ``per_device_train_batch_size = 16`` completions per
forward/backward, ``gradient_accumulation_steps = M x G / 16`` (so one optimizer step sees the
whole batch and no extra "old log-prob" forward pass is needed). dashrl's variants keep the
schedule of their own config file (micro-batch size, generation batch size, gradient
filtering, ...), while the shared hyperparameters above are forced on the command line
(see ``dashrl_overrides``), so every row trains the same objective.

Timing: "wall s" is the time of the N training steps only (TRL: ``on_train_begin`` to
``on_train_end`` of a callback; dashrl: the sum of per-step times in ``metrics.jsonl`` minus the
evaluation and checkpoint time folded into the last step). Model loading and evaluations are
excluded on both sides; they are recorded in the JSON (``end_to_end_seconds``). Runs go one after
the other on the same machine, so load from other processes shows up as noise.

What cannot match exactly: random samples (the two libraries draw from the RNG in a different
order), TRL's extra per-token entropy computation in its loss pass (always on), and TRL's
generation from the training model itself vs dashrl's separate engine copy with a weight sync per
step. These are part of what is being compared.

How to run
----------
    make bench-trl                                         # installs the bench-trl extra, runs the defaults
    .venv/bin/python benchmarks/trl_compare.py --steps 2 --eval-problems 32   # a quick check

Writes ``OUT/trl_compare.json`` (all settings, versions, per-step logs, results) and
``OUT/trl_compare.md`` (the table), default ``OUT = runs/trl_compare``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
import warnings
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

WARMUP_STEPS = 5
ADAM_BETAS = (0.9, 0.99)
MAX_GRAD_NORM = 1.0
SEED = 0
TRAIN_SEED = 1
EVAL_SEED = 999
EVAL_SAMPLES = 4
EVAL_BATCH_SIZE = 256
TRL_MICRO_BATCH = 16


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=20, help="optimizer steps N (default 20)")
    p.add_argument("--prompts-per-step", type=int, default=32, help="M prompts per step (default 32)")
    p.add_argument("--group-size", type=int, default=8, help="G completions per prompt (default 8)")
    p.add_argument("--lr", type=float, default=2e-4, help="peak learning rate (default 2e-4)")
    p.add_argument("--max-new-tokens", type=int, default=64, help="maximum completion length (default 64)")
    p.add_argument("--beta", type=float, default=0.0, help="KL coefficient on both sides (default 0: no reference model)")
    p.add_argument("--eval-problems", type=int, default=512, help="held-out problems evaluated (default 512)")
    p.add_argument("--out", default="runs/trl_compare", help="output directory (default runs/trl_compare)")
    p.add_argument("--dashrl-configs", default="configs/grpo_standard.yaml,configs/dash.yaml",
                   help="comma-separated dashrl configs to run (a missing file is skipped with a note)")
    p.add_argument("--skip-trl", action="store_true", help="run only the dashrl variants (no TRL row)")
    args = p.parse_args(argv)
    batch = args.prompts_per_step * args.group_size
    if args.group_size < 2 or args.steps < 1 or args.prompts_per_step < 1:
        p.error("need --steps >= 1, --prompts-per-step >= 1, --group-size >= 2")
    if batch % TRL_MICRO_BATCH:
        p.error(f"M x G = {batch} must be a multiple of TRL's micro-batch of {TRL_MICRO_BATCH}")
    return args


# ------------------------------------------------------------------------------------------ shared


def eval_config(n: int):
    from dashrl.config import EvalConfig

    return EvalConfig(num_problems=n, every=0, samples=EVAL_SAMPLES, temperature=1.0, ks=[1, EVAL_SAMPLES],
                      batch_size=EVAL_BATCH_SIZE)


def dashrl_overrides(args, run_dir: Path) -> list[str]:
    """The hyperparameters every dashrl variant is forced to share with the TRL run."""
    ev = eval_config(args.eval_problems)
    return [
        "model.path=testbed", "model.dtype=float32",
        "task.name=testbed", f"task.train_seed={TRAIN_SEED}", f"task.eval_seed={EVAL_SEED}",
        "sampling.temperature=1.0", "sampling.top_p=1.0", "sampling.top_k=0",
        f"sampling.max_new_tokens={args.max_new_tokens}",
        f"algo.prompts_per_step={args.prompts_per_step}", f"algo.group_size={args.group_size}",
        "algo.scale_rewards=true", "algo.updates_per_batch=1", f"algo.beta={args.beta}", "algo.kl_estimator=k3",
        "algo.loss_agg=grpo",
        f"train.steps={args.steps}", f"train.lr={args.lr}", "train.lr_schedule=constant",
        f"train.warmup_steps={WARMUP_STEPS}", "train.weight_decay=0.0",
        f"train.adam_betas=[{ADAM_BETAS[0]},{ADAM_BETAS[1]}]", f"train.max_grad_norm={MAX_GRAD_NORM}",
        f"train.seed={SEED}",
        "eval.every=0", f"eval.num_problems={ev.num_problems}", f"eval.samples={ev.samples}",
        f"eval.temperature={ev.temperature}", f"eval.ks=[{','.join(map(str, ev.ks))}]",
        f"eval.batch_size={ev.batch_size}",
        f"log.run_dir={run_dir}", "log.save_every=0", "log.progress=false",
    ]


def versions() -> dict:
    import importlib.metadata as md

    out = {"python": platform.python_version(), "platform": platform.platform(), "cpus": os.cpu_count()}
    for name in ("dashrl", "torch", "transformers", "trl", "accelerate", "datasets"):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            out[name] = None
    import torch

    out["torch_threads"] = torch.get_num_threads()
    return out


# --------------------------------------------------------------------------------------------- TRL


def trl_settings(args, output_dir: Path) -> dict:
    """GRPOConfig keyword arguments: the matched hyperparameters and TRL's fastest schedule."""
    batch = args.prompts_per_step * args.group_size
    return dict(
        output_dir=str(output_dir),
        # schedule: one generate call of M x G completions per optimizer step, backprop in 16s
        per_device_train_batch_size=TRL_MICRO_BATCH,
        gradient_accumulation_steps=batch // TRL_MICRO_BATCH,
        generation_batch_size=batch,
        num_generations=args.group_size,
        max_steps=args.steps,
        num_iterations=1,
        shuffle_dataset=False,
        # sampling
        max_completion_length=args.max_new_tokens,
        temperature=1.0, top_p=1.0, top_k=0, min_p=None, repetition_penalty=1.0,
        use_vllm=False,
        # objective
        beta=args.beta,
        use_bias_correction_kl=False,  # plain k3 KL gradient, as dashrl (only matters when beta > 0)
        loss_type="grpo",
        scale_rewards="group",
        mask_truncated_completions=False,
        # optimizer
        learning_rate=args.lr,
        lr_scheduler_type="constant_with_warmup",
        warmup_steps=WARMUP_STEPS,
        optim="adamw_torch",
        adam_beta1=ADAM_BETAS[0], adam_beta2=ADAM_BETAS[1], adam_epsilon=1e-8,
        weight_decay=0.0,
        max_grad_norm=MAX_GRAD_NORM,
        # precision / device / memory
        bf16=False, fp16=False, use_cpu=True,
        **{_checkpointing_field(): False},  # TRL turns activation checkpointing on by default
        # bookkeeping: log every step, save and report nothing
        seed=SEED, logging_steps=1, report_to="none", save_strategy="no", eval_strategy="no",
        disable_tqdm=True, dataloader_num_workers=0,
    )


def _checkpointing_field() -> str:
    """transformers 5.x renamed ``gradient_checkpointing`` to ``activation_checkpointing`` (old name deprecated)."""
    import dataclasses

    from trl import GRPOConfig

    names = {f.name for f in dataclasses.fields(GRPOConfig)}
    return "activation_checkpointing" if "activation_checkpointing" in names else "gradient_checkpointing"


def run_trl(args, out: Path) -> dict:
    import datasets
    import torch
    import trl
    from transformers import PrinterCallback, TrainerCallback
    from transformers.utils import logging as hf_logging
    from trl import GRPOConfig, GRPOTrainer

    from dashrl.eval.evaluate import evaluate
    from dashrl.models import load_model, load_tokenizer
    from dashrl.rewards.math import score_math
    from dashrl.rollout.hf_engine import HFEngine
    from dashrl.config import TaskConfig
    from dashrl.tasks import get_task
    from dashrl.testbed.pretrain import ensure_base_checkpoint

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    datasets.disable_progress_bars()
    warnings.filterwarnings("ignore", category=FutureWarning)
    t_start = time.perf_counter()
    model_path = str(ensure_base_checkpoint(progress=False))
    task = get_task(TaskConfig(name="testbed", eval_seed=EVAL_SEED))
    stream = task.train_stream(TRAIN_SEED)
    problems = [next(stream) for _ in range(args.steps * args.prompts_per_step)]
    dataset = datasets.Dataset.from_list([{"prompt": p.prompt, "answer": p.answer, "id": p.id} for p in problems])

    def arithmetic_reward(completions, answer, **kwargs):
        return [score_math(c, a).score for c, a in zip(completions, answer)]

    settings = trl_settings(args, out / "trl_run")
    config = GRPOConfig(**settings)
    resolved = {"generation_batch_size": config.generation_batch_size,
                "steps_per_generation": config.steps_per_generation,
                "optim": str(config.optim), "lr_scheduler_type": str(config.lr_scheduler_type)}
    tokenizer = load_tokenizer(model_path)
    torch.manual_seed(SEED)
    # beta > 0: pass the path so that TRL loads its reference model from disk
    model = model_path if args.beta > 0 else load_model(model_path, "float32")
    if args.beta > 0:
        config.model_init_kwargs = {"dtype": torch.float32}

    class Timer(TrainerCallback):
        def __init__(self):
            self.t0 = self.t1 = None
            self.last = None
            self.step_seconds: list[float] = []
            self.logs: list[dict] = []

        def on_train_begin(self, a, state, control, **kw):
            self.t0 = self.last = time.perf_counter()

        def on_step_end(self, a, state, control, **kw):
            now = time.perf_counter()
            self.step_seconds.append(now - self.last)
            self.last = now

        def on_log(self, a, state, control, logs=None, **kw):
            logs = dict(logs or {})
            self.logs.append({"step": state.global_step, **logs})
            if "reward" in logs:
                print(f"  TRL step {state.global_step:>4}/{args.steps}  reward {logs['reward']:.3f}  "
                      f"lr {logs.get('learning_rate', float('nan')):.2e}  "
                      f"{self.step_seconds[-1] if self.step_seconds else float('nan'):.1f} s", flush=True)

        def on_train_end(self, a, state, control, **kw):
            self.t1 = time.perf_counter()

    timer = Timer()
    trainer = GRPOTrainer(model=model, reward_funcs=arithmetic_reward, args=config, train_dataset=dataset,
                          processing_class=tokenizer, callbacks=[timer])
    trainer.remove_callback(PrinterCallback)
    flag = getattr(trainer.model, "is_activation_checkpointing", None)
    resolved["activation_checkpointing_on_model"] = bool(flag if flag is not None else trainer.model.is_gradient_checkpointing)
    t_ready = time.perf_counter()
    trainer.train()
    t_trained = time.perf_counter()
    train_seconds = timer.t1 - timer.t0
    optimizer = getattr(trainer.optimizer, "optimizer", trainer.optimizer)  # unwrap accelerate's wrapper
    resolved["optimizer"] = f"{type(optimizer).__module__}.{type(optimizer).__name__}"
    resolved["optimizer_param_groups"] = [  # what was used (the constructor defaults are not)
        {k: g[k] for k in ("betas", "eps", "weight_decay", "fused", "foreach") if k in g} | {"params": len(g["params"])}
        for g in optimizer.param_groups
    ]
    resolved["lr_scheduler_after_train"] = type(trainer.lr_scheduler).__name__ if trainer.lr_scheduler is not None else None
    steps_done = trainer.state.global_step

    engine = HFEngine(trainer.model, tokenizer)
    eval_problems = task.eval_problems(args.eval_problems, EVAL_SEED)
    result = evaluate(engine, task, eval_problems, eval_config(args.eval_problems), args.max_new_tokens)
    t_end = time.perf_counter()
    return {
        "name": "TRL GRPOTrainer",
        "trl_version": trl.__version__,
        "grpo_config": {k: (v if isinstance(v, (int, float, str, bool, type(None))) else str(v))
                        for k, v in settings.items()},
        "grpo_config_resolved": resolved,
        "model_path": model_path,
        "steps": steps_done,
        "train_seconds": train_seconds,
        "seconds_per_step": train_seconds / max(steps_done, 1),
        "step_seconds": timer.step_seconds,
        "end_to_end_seconds": t_end - t_start,
        "setup_seconds": t_ready - t_start,
        "train_call_seconds": t_trained - t_ready,
        "eval_seconds": t_end - t_trained,
        "after": result.metrics,
        "log_history": timer.logs,
    }


# ------------------------------------------------------------------------------------------ dashrl


def resolve_config(path: str) -> Path | None:
    for candidate in (Path(path), REPO / path):
        if candidate.is_file():
            return candidate
    return None


def run_dashrl(args, config_path: Path, out: Path) -> dict:
    name = config_path.stem
    run_dir = out / f"dashrl_{name}"
    cmd = [sys.executable, "-m", "dashrl.cli", "train", str(config_path), *dashrl_overrides(args, run_dir), "--no-progress"]
    print(f"\n== dashrl {name}: {' '.join(cmd[2:])}", flush=True)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, text=True, capture_output=True)
    elapsed = time.perf_counter() - t0
    (out / f"dashrl_{name}.log").write_text(proc.stdout + proc.stderr)
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-15:])
        raise RuntimeError(f"dashrl train {config_path} failed (exit {proc.returncode}):\n{tail}")
    print(proc.stdout.strip(), flush=True)
    summary = json.loads((run_dir / "summary.json").read_text())
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    step_rows = [r for r in rows if "time/step" in r]
    step_seconds = [r["time/step"] - r.get("time/evaluation", 0.0) - r.get("time/checkpoint", 0.0) for r in step_rows]
    train_seconds = sum(step_seconds)
    return {
        "name": f"dashrl {name}",
        "config_file": str(config_path),
        "command": cmd[2:],
        "resolved_config": (run_dir / "config.yaml").read_text(),
        "steps": len(step_rows),
        "train_seconds": train_seconds,
        "seconds_per_step": train_seconds / max(len(step_rows), 1),
        "step_seconds": step_seconds,
        "summary_wall_seconds": summary["wall_seconds"],
        "summary_seconds_per_step": summary["seconds_per_step"],
        "end_to_end_seconds": elapsed,
        "before": summary["before"],
        "after": summary["after"],
        "stage_shares": summary.get("stage_shares"),
        "reward_per_step": [r.get("reward/mean") for r in step_rows],
    }


# ------------------------------------------------------------------------------------------ report


def _pct(metrics: dict, key: str) -> str:
    value = metrics.get(key)
    return "n/a" if value is None else f"{value * 100:.1f}"


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def render(args, runs: list[dict], notes: list[str], info: dict) -> str:
    trl_run = next((r for r in runs if r["name"].startswith("TRL")), None)
    base = next((r["before"] for r in runs if r.get("before")), None)
    lines = [
        f"# dashrl vs TRL GRPOTrainer ({args.steps} optimizer steps, M={args.prompts_per_step} prompts x "
        f"G={args.group_size} completions, lr {args.lr:g}, max {args.max_new_tokens} new tokens, beta {args.beta:g})",
        "",
        f"TRL {info.get('trl')}, dashrl {info.get('dashrl')}, torch {info.get('torch')}, transformers "
        f"{info.get('transformers')}; {info.get('cpus')} CPUs, {info.get('torch_threads')} torch threads. "
        f"Held-out: {args.eval_problems} problems (eval seed {EVAL_SEED}), sampled pass@1 from {EVAL_SAMPLES} samples at T=1.",
        "",
        f"| run | wall s ({args.steps} steps) | s/step | median s/step | greedy pass@1 % | sampled pass@1 % |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    if base:
        lines.append(f"| base model (no RL) | - | - | - | {_pct(base, 'greedy/pass@1')} | {_pct(base, 'sampled/pass@1')} |")
    for r in runs:
        label = r["name"] + (" (best config)" if r is trl_run else "")
        lines.append(f"| {label} | {r['train_seconds']:.1f} | {r['seconds_per_step']:.2f} | {_median(r['step_seconds']):.2f} | "
                     f"{_pct(r['after'], 'greedy/pass@1')} | {_pct(r['after'], 'sampled/pass@1')} |")
    lines.append("")
    if trl_run:
        for r in runs:
            if r is not trl_run:
                lines.append(f"{r['name']} takes {r['train_seconds'] / trl_run['train_seconds']:.2f} of TRL's wall time "
                             f"(median step: {_median(r['step_seconds']) / _median(trl_run['step_seconds']):.2f})")
        lines.append("")
    lines.append("wall s: the training steps only (no model loading, no evaluation); median s/step is less "
                 "sensitive to load from other processes. Each run's full settings, per-step times and logs are "
                 "in trl_compare.json.")
    for note in notes:
        lines.append(f"\nNote: {note}")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    args = parse_args(argv)
    out = Path(args.out)
    if not out.is_absolute():
        out = Path.cwd() / out
    out.mkdir(parents=True, exist_ok=True)
    notes: list[str] = []
    configs: list[Path] = []
    for item in [c.strip() for c in args.dashrl_configs.split(",") if c.strip()]:
        found = resolve_config(item)
        if found is None:
            notes.append(f"dashrl config {item} not found: skipped")
            print(f"note: dashrl config {item} not found: skipped", flush=True)
        else:
            configs.append(found)
    info = versions()
    runs: list[dict] = []
    if not args.skip_trl:
        if info.get("trl") is None:
            print("trl is not installed: run `make bench-trl` (or pip install -e '.[bench-trl]' 'torch==2.13.0')",
                  file=sys.stderr)
            return 2
        print(f"== TRL {info['trl']} GRPOTrainer: {args.steps} steps of {args.prompts_per_step} x {args.group_size}", flush=True)
        runs.append(run_trl(args, out))
        print(f"   TRL: {runs[-1]['train_seconds']:.1f} s for {runs[-1]['steps']} steps, after: "
              f"greedy {_pct(runs[-1]['after'], 'greedy/pass@1')} %, sampled {_pct(runs[-1]['after'], 'sampled/pass@1')} %",
              flush=True)
    for config_path in configs:
        runs.append(run_dashrl(args, config_path, out))
    for r in runs:
        if r["steps"] != args.steps:
            notes.append(f"{r['name']} ran {r['steps']} steps, not {args.steps}")
    table = render(args, runs, notes, info)
    (out / "trl_compare.md").write_text(table)
    report = {"args": vars(args), "versions": info, "notes": notes,
              "shared": {"warmup_steps": WARMUP_STEPS, "adam_betas": ADAM_BETAS, "max_grad_norm": MAX_GRAD_NORM,
                         "seed": SEED, "train_seed": TRAIN_SEED, "eval_seed": EVAL_SEED,
                         "eval": eval_config(args.eval_problems).model_dump()},
              "runs": runs}
    (out / "trl_compare.json").write_text(json.dumps(report, indent=2, default=str))
    print("\n" + table)
    print(f"written: {out / 'trl_compare.md'}, {out / 'trl_compare.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
