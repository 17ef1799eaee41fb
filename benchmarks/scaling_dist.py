"""Data-parallel scaling of DASH on the testbed, measured side by side in one run.

    python benchmarks/scaling_dist.py [--steps 6] [--prompts 16] [--repeats 2] [--out benchmarks/results/scaling_dist]

1. Same machine, same cores: 1 process x 2 threads vs 2 processes x 1 thread
   (``dashrl train`` vs ``dashrl train --nproc 2``), and 1 process x 1 thread as
   a control, DASH with configs/bench.yaml
   (--prompts prompts x 8 completions per step): seconds per step and tokens per
   training second (generated, and trained = forward/backward tokens).
2. Skewed filtering, 2 processes, with and without rebalancing: process 1's
   task scores a fixed 3 of every 4 of its prompts 0 for every completion, so
   gradient filtering drops those whole groups there and process 1 keeps far
   fewer tokens than process 0 (a skew made on purpose, so that the effect is
   visible). Step time and the logged imbalance (max / mean tokens over
   processes) before and after rebalancing.
3. 2 processes with the model sharded by FSDP2 (``dist.fsdp=true``): what the
   per-pass all-gathers, idle passes and gathered weight syncs cost next to
   replicated weights, on a model small enough not to need sharding.

Each configuration is its own run directory under --runs; results.json and
results.md (in --out) summarise them. The configurations run --repeats times in
alternating order (ABCD DCBA ...) and the table shows means, so a change of
the machine's load during the run hits all of them alike. Timings depend on
the load: compare the rows of one run, not runs of different days.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
COMMON = ["eval.num_problems=32", "eval.samples=0", "eval.ks=[1]", "eval.every=0", "log.save_every=0"]


def _worker(argv: list[str]) -> None:
    """One process of a skewed run (under torchrun): process 1 zeroes 3 of 4 of its prompts' rewards."""
    from dashrl.config import load_config
    from dashrl.rewards.result import RewardResult
    from dashrl.train.run import prepare, train

    config = load_config(argv[0], argv[1:])
    setup = prepare(config, progress=False)
    task, rank = setup.trainer.task, setup.trainer.dist.rank
    score = task.score

    def skewed(completion, problem):
        if rank == 1 and hashlib.sha1(problem.id.encode()).digest()[0] % 4:
            return RewardResult(0.0, "zeroed for the skew benchmark")
        return score(completion, problem)

    task.score = skewed
    try:
        train(setup, progress=False)
    finally:
        setup.trainer.dist.close()


def _run(name: str, command: list[str], run_dir: Path, env: dict) -> dict:
    from dashrl.runlog import read_metrics

    shutil.rmtree(run_dir, ignore_errors=True)  # this script's own scratch run from an earlier call
    start = time.perf_counter()
    proc = subprocess.run(command + [f"log.run_dir={run_dir}"], env=env, cwd=ROOT, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"{name} failed:\n{proc.stderr[-3000:]}")
    summary = json.loads((run_dir / "summary.json").read_text())
    rows = read_metrics(run_dir / "metrics.jsonl")
    steps = [r for r in rows if "time/step" in r]
    seconds = summary["train_seconds"]
    result = {
        "name": name,
        "steps": summary["steps"],
        "s_per_step": seconds / max(summary["steps"], 1),
        "generated_tok_s": summary["tokens_generated"] / seconds,
        "trained_tok_s": summary["tokens_trained"] / seconds,
        "wall_seconds_with_startup": time.perf_counter() - start,
    }
    for key in ("dist/imbalance_before", "dist/imbalance_after", "time/rebalance", "time/forward_backward",
                "time/generation", "time/weight_sync", "filter/dropped_frac", "dist/idle_passes"):
        values = [r[key] for r in steps if key in r]
        if values:
            result[key] = sum(values) / len(values)
    print(json.dumps(result), flush=True)
    return result


def _mean(runs: list[dict]) -> dict:
    out = {"name": runs[0]["name"], "runs": len(runs)}
    for key in runs[0]:
        if isinstance(runs[0][key], (int, float)):
            out[key] = sum(r[key] for r in runs) / len(runs)
    return out


def main() -> None:
    if sys.argv[1:2] == ["--worker"]:
        return _worker(sys.argv[2:])
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--prompts", type=int, default=16, help="M, prompts per step (even)")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--out", default="benchmarks/results/scaling_dist", help="results.json and results.md")
    parser.add_argument("--runs", default="runs/scaling_dist", help="the runs' directories")
    args = parser.parse_args()
    out = (ROOT / args.out).resolve()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    config = str(ROOT / "configs" / "bench.yaml")
    settings = [f"train.steps={args.steps}", f"algo.prompts_per_step={args.prompts}", *COMMON]
    dashrl = [sys.executable, "-m", "dashrl", "train", "--no-progress", config, *settings]
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                str(Path(__file__).resolve()), "--worker", config, *settings]
    configs = {
        "1proc_x_2threads": dashrl + ["dist.threads_per_process=2"],
        "1proc_x_1thread": dashrl + ["dist.threads_per_process=1"],  # control: what one core does alone
        "2procs_x_1thread": dashrl[:4] + ["--nproc", "2"] + dashrl[4:],
        "2procs_fsdp": dashrl[:4] + ["--nproc", "2"] + dashrl[4:] + ["dist.fsdp=true"],
        "skewed_rebalance_on": torchrun + ["dist.rebalance=true"],
        "skewed_rebalance_off": torchrun + ["dist.rebalance=false"],
    }
    load_before = os.getloadavg()[0]
    runs: dict[str, list[dict]] = {name: [] for name in configs}
    for repeat in range(args.repeats):
        order = list(configs) if repeat % 2 == 0 else list(reversed(configs))
        for name in order:
            runs[name].append(_run(name, configs[name], ROOT / args.runs / f"{name}_{repeat}", env))
    results = [_mean(runs[name]) for name in configs]
    for r in results:
        r["command"] = " ".join(configs[r["name"]]).replace(str(ROOT) + "/", "")
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    note = (f"`python benchmarks/scaling_dist.py --steps {args.steps} --prompts {args.prompts} --repeats {args.repeats}`"
            f" on {os.cpu_count()} CPU cores; 1-minute load average {load_before:.1f} at the start and "
            f"{os.getloadavg()[0]:.1f} at the end. Means of {args.repeats} runs "
            "per row, run in alternating order; skewed = process 1 zeroes the rewards of 3 of 4 of its prompts.\n\n")
    lines = ["| run | s/step | forward/backward s/step | generated tok/s | trained tok/s | imbalance before | after "
             "| rebalance s/step |", "|---|---|---|---|---|---|---|---|"]
    for r in results:
        lines.append(f"| {r['name']} | {r['s_per_step']:.2f} | {r.get('time/forward_backward', float('nan')):.3f} | "
                     f"{r['generated_tok_s']:.0f} | {r['trained_tok_s']:.0f} | "
                     f"{r.get('dist/imbalance_before', float('nan')):.2f} | "
                     f"{r.get('dist/imbalance_after', float('nan')):.2f} | {r.get('time/rebalance', 0.0):.3f} |")
    (out / "results.md").write_text(note + "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
