"""HF generate vs vLLM, side by side in one run: generation tokens/s by batch, seconds per RL step.

    python benchmarks/vllm_vs_hf.py                      # testbed + SmolLM2, writes benchmarks/results/vllm_vs_hf.{json,md}
    python benchmarks/vllm_vs_hf.py --models testbed --batches 1,16 --steps 1 --out /tmp/quick

Needs vLLM (``make test-vllm`` builds ``.venv-vllm`` with the CPU build; on a GPU ``pip install vllm``).
For each model (the built-in testbed, SmolLM2-135M-Instruct):

- generation: completion tokens per second of one engine call at each batch
  size (b completions: b // G prompts x G, G = 8, or one prompt x b when b < G;
  temperature 1, the task's prompts), after one untimed warm-up call per engine;
- RL: seconds per step of standard GRPO (one engine call per micro-batch of 4)
  and DASH (the whole step in one call, then gradient filtering), via ``dashrl
  bench`` variants ``grpo@ENGINE`` / ``dash@ENGINE`` (training seconds, evaluation
  excluded).

Every HF measurement runs before the first vLLM engine starts: vLLM's CPU
backend binds this process's OpenMP threads and ignores later
``torch.set_num_threads``, which would change the HF numbers. Both engines use
the model's dtype (float32 here). On a GPU, HF generation runs on the GPU;
the RL steps' trainer runs where ``dashrl train`` puts it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

MODELS = {  # model.path, overrides for the RL steps, new tokens per completion
    "testbed": ("testbed", ["algo.prompts_per_step=4", "algo.group_size=8", "train.micro_batch_size=16"], 64),
    "smollm2": ("smollm2", ["algo.prompts_per_step=2", "algo.group_size=4", "train.micro_batch_size=4"], 16),
}
GROUP = 8


def _prompts(config, tokenizer, count: int) -> list[str]:
    from dashrl.tasks import get_task
    from dashrl.tasks.prompts import prompt_formatter

    stream = get_task(config.task).train_stream(config.task.train_seed)
    fmt = prompt_formatter(config.task, tokenizer)
    return [fmt(next(stream)) for _ in range(count)]


def measure_generation(engine, prompts: list[str], batches: list[int], max_new_tokens: int) -> list[dict]:
    import torch

    from dashrl.rollout.engine import SamplingParams

    sampling = SamplingParams(temperature=1.0, max_new_tokens=max_new_tokens)
    torch.manual_seed(0)
    engine.generate(prompts[:1], 1, sampling)  # warm-up, untimed
    rows, offset = [], 0
    for b in batches:
        count, n = (b // GROUP, GROUP) if b >= GROUP else (1, b)
        chosen = prompts[offset : offset + count]
        offset += count
        start = time.perf_counter()
        groups = engine.generate(chosen, n, sampling)
        seconds = time.perf_counter() - start
        tokens = sum(len(c.token_ids) for g in groups for c in g)
        rows.append({"batch": b, "tokens": tokens, "seconds": seconds, "tokens_per_s": tokens / seconds})
        print(f"  batch {b:>4}: {tokens / seconds:8.1f} tokens/s ({tokens} tokens in {seconds:.1f} s)", flush=True)
    return rows


def generation(model_key: str, engine_name: str, batches: list[int]) -> list[dict]:
    from dashrl.config import load_config
    from dashrl.models import load_model, load_tokenizer, resolve_model_path
    from dashrl.rollout.factory import close_engine, make_engine

    path_name, _, max_new = MODELS[model_key]
    config = load_config(overrides=[f"model.path={path_name}", f"rollout.engine={engine_name}"])
    path = resolve_model_path(config.model.path)
    model, tokenizer = load_model(path, config.model.dtype), load_tokenizer(path)
    import torch

    if engine_name == "hf" and torch.cuda.is_available():  # HF generate on the GPU too (vLLM picks it itself)
        model = model.to("cuda")
    prompts = _prompts(config, tokenizer, 1 + sum(max(b // GROUP, 1) for b in batches))
    print(f"== generation, {model_key} on {engine_name} ({max_new} new tokens)", flush=True)
    engine = make_engine(config, path, model, tokenizer)
    try:
        return measure_generation(engine, prompts, batches, max_new)
    finally:
        close_engine(engine)


def rl_steps(model_key: str, engine_name: str, steps: int, out: Path) -> dict:
    from dashrl.bench import run_bench
    from dashrl.config import load_config

    path_name, overrides, max_new = MODELS[model_key]
    config = load_config(overrides=[f"model.path={path_name}", f"train.steps={steps}", f"sampling.max_new_tokens={max_new}",
                                    "algo.beta=0.0", "algo.filter_tau=0.0", "train.warmup_steps=0",
                                    "eval.num_problems=2", "eval.samples=0", "eval.batch_size=64",
                                    "log.progress=false", *overrides])
    print(f"== RL steps, {model_key} on {engine_name}", flush=True)
    report = run_bench(config, [f"grpo@{engine_name}", f"dash@{engine_name}"], out / model_key, progress=False)
    rows = {}
    for name, r in report["variants"].items():
        rows[name.split("@")[0]] = {"seconds_per_step": r["train_seconds"] / max(r["steps"], 1),
                                    "sampling_seconds": r["sampling_seconds"], "update_seconds": r["update_seconds"],
                                    "steps": r["steps"], "filtered_frac": r["filtered_frac"],
                                    "tokens_generated": r["tokens_generated"]}
        print(f"  {name}: {rows[name.split('@')[0]]['seconds_per_step']:.2f} s/step", flush=True)
    return rows


def format_markdown(result: dict) -> str:
    lines = [f"Measured {result['date']} on {result['machine']}; {result['note']}", ""]
    for model_key, by_engine in result["models"].items():
        lines += [f"### {model_key}: generation tokens/s ({MODELS[model_key][2]} new tokens, temperature 1)", ""]
        batches = [r["batch"] for r in next(iter(by_engine.values()))["generation"]]
        lines += ["| engine | " + " | ".join(f"batch {b}" for b in batches) + " |",
                  "|---|" + "---|" * len(batches)]
        for engine, data in by_engine.items():
            lines.append(f"| {engine} | " + " | ".join(f"{r['tokens_per_s']:.0f}" for r in data["generation"]) + " |")
        lines += ["", f"### {model_key}: seconds per RL step ({result['steps']} steps each)", "",
                  "| engine | standard GRPO s/step | DASH s/step | GRPO sampling s | DASH sampling s | DASH filtered |",
                  "|---|---|---|---|---|---|"]
        for engine, data in by_engine.items():
            if "rl" not in data:
                continue
            g, d = data["rl"]["grpo"], data["rl"]["dash"]
            lines.append(f"| {engine} | {g['seconds_per_step']:.2f} | {d['seconds_per_step']:.2f} | "
                         f"{g['sampling_seconds']:.1f} | {d['sampling_seconds']:.1f} | {d['filtered_frac'] * 100:.0f}% |")
        lines.append("")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="testbed,smollm2")
    parser.add_argument("--batches", default="1,16,64,256")
    parser.add_argument("--smollm2-batches", help="SmolLM2's batch sizes (default: --batches); on a loaded CPU "
                        "HF generate at batch 256 takes many minutes")
    parser.add_argument("--steps", type=int, default=3, help="RL steps per variant")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "vllm_vs_hf"),
                        help="writes OUT.json and OUT.md; the bench runs go to OUT-runs/")
    args = parser.parse_args()
    from dashrl.cli import _quiet_libraries
    from dashrl.rollout.vllm_engine import require_vllm

    require_vllm()
    _quiet_libraries()
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    batches = {m: [int(b) for b in args.batches.split(",")] for m in models}
    if args.smollm2_batches and "smollm2" in batches:
        batches["smollm2"] = [int(b) for b in args.smollm2_batches.split(",")]
    out = Path(args.out)
    runs = Path(f"{out}-runs")
    results: dict = {m: {} for m in models}
    load_start = os.getloadavg()[0]
    import torch

    def save() -> dict:  # after every measurement, so a run cut short keeps what it measured
        result = {
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
                       f"cuda={torch.cuda.is_available()}",
            "note": f"HF and vLLM measured side by side in this one run; timings on a shared, loaded machine "
                    f"(1-min load average {load_start:.1f} at the start, {os.getloadavg()[0]:.1f} at the end)",
            "steps": args.steps,
            "models": {m: v for m, v in results.items() if v},
        }
        out.parent.mkdir(parents=True, exist_ok=True)
        Path(f"{out}.json").write_text(json.dumps(result, indent=2) + "\n")
        Path(f"{out}.md").write_text(format_markdown(result) + "\n")
        return result

    for engine in ("hf", "vllm"):  # all HF work first: see the module docstring
        for model_key in models:
            results[model_key][engine] = {"generation": generation(model_key, engine, batches[model_key])}
            save()
            results[model_key][engine]["rl"] = rl_steps(model_key, engine, args.steps, runs / engine)
            save()
    print(format_markdown(save()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
