"""DASH's time ratio against model size: ``dashrl bench`` at several model shapes in one run.

``bench.model_shape`` set to a list of shapes (``dashrl.models.shapes``) runs
the bench's variants (standard GRPO at the paper's micro-batch, GRPO at the
tuned micro-batch, preemptive sampling, DASH) once per shape, on randomly
initialised models, and writes ``scaling.json`` and ``scaling.md``: each
shape's parameters, each variant's training seconds (sampling and update
parts), and the DASH / GRPO and preemptive / GRPO time ratios. Each shape's
own bench output lands in ``OUT/<shape>/``.

A timing run (``apply_timing``) changes two things in a prepared trainer:
completion lengths come from ``bench.completion_tokens`` (EOS ignored) and
rewards from ``FilterRateTask`` at ``bench.filter_frac``. Everything else is
the real pipeline: the same engine calls, filter, micro-batches, optimizer and
weight sync as a training run. Evaluation is cut to ``TIMING_EVAL_PROBLEMS``
greedy problems, since the accuracy of a random model on synthetic rewards
means nothing.

Simplification: every shape runs with the config's ``train.micro_batch_size``
as the tuned micro-batch (``dashrl tune`` per shape would pick its own).
"""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path

from dashrl.config import Config, with_overrides

TIMING_EVAL_PROBLEMS = 8


def timing_overrides(config: Config) -> list[str]:
    """What a timing run changes in a bench variant's config: a tiny greedy evaluation, no mid-run checkpoints."""
    return [f"eval.num_problems={min(config.eval.num_problems, TIMING_EVAL_PROBLEMS)}", "eval.samples=0",
            "eval.every=0", "log.keep_last=1"]


def apply_timing(trainer, config: Config) -> None:
    """Set completion lengths and synthetic filter-rate rewards on a prepared ``Trainer`` (see the module doc)."""
    from dashrl.tasks.timing import FilterRateTask

    bench = config.bench
    if bench.completion_tokens is not None:
        tokens = bench.completion_tokens
        bounds = (tokens, tokens) if isinstance(tokens, int) else tuple(tokens)
        trainer.sampling = replace(trainer.sampling, lengths=bounds)
    if bench.filter_frac is not None:
        trainer.task = FilterRateTask(trainer.task, bench.filter_frac)
        trainer.stream = trainer.task.train_stream(config.task.train_seed)


def shape_label(shape) -> str:
    """'testbed', 'qwen2.5-0.5b', 'h256-l6' (a mapping), or a config file's stem."""
    if isinstance(shape, dict):
        return f"h{shape['hidden']}-l{shape['layers']}"
    return Path(shape).stem if shape.endswith(".json") else shape


def run_scaling(base: Config, variants: list[str], out_dir: Path, progress: bool = True, paper_micro_batch: int = 4,
                command: str = "") -> dict:
    """Bench every shape of ``base.bench.model_shape`` (a list); write scaling.json and scaling.md."""
    from dashrl.bench import run_bench
    from dashrl.models.shapes import count_parameters, ensure_shape_model, shape_config
    from dashrl.testbed.model import build_tokenizer

    shapes = base.bench.model_shape
    vocab = len(build_tokenizer())
    sizes = [(shape_label(s), s, count_parameters(shape_config(s, vocab))) for s in shapes]  # every shape checked first
    rows = []
    start = time.perf_counter()
    for label, shape, params in sizes:
        if progress:
            print(f"=== {label}: {params / 1e6:.2f}M parameters", flush=True)
        path = ensure_shape_model(shape, seed=base.train.seed)
        config = with_overrides(base, [f"model.path={path}"])
        config = config.model_copy(update={"bench": config.bench.model_copy(update={"model_shape": None})})
        report = run_bench(config, variants, out_dir / label, progress, paper_micro_batch)
        rows.append(scaling_row(label, shape, params, report))
    result = {"command": command, "seconds": time.perf_counter() - start,
              "settings": {"prompts_per_step": base.algo.prompts_per_step, "group_size": base.algo.group_size,
                           "steps": base.train.steps, "completion_tokens": base.bench.completion_tokens,
                           "filter_frac": base.bench.filter_frac, "beta": base.algo.beta,
                           "paper_micro_batch": paper_micro_batch, "tuned_micro_batch": base.train.micro_batch_size,
                           "dtype": base.model.dtype},
              "sizes": rows}
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "scaling.json").write_text(json.dumps(result, indent=2) + "\n")
    (out_dir / "scaling.md").write_text(format_scaling(result) + "\n")
    return result


def scaling_row(label: str, shape, params: int, report: dict) -> dict:
    """One shape's line: seconds per variant (total, sampling, update), filtered fraction, and the ratios."""
    variants = {name: {"train_seconds": r["train_seconds"], "sampling_seconds": r["sampling_seconds"],
                       "update_seconds": r["update_seconds"], "filtered_frac": r["filtered_frac"],
                       "tokens_generated": r["tokens_generated"]}
                for name, r in report["variants"].items()}
    return {"size": label, "shape": shape, "parameters": params, "variants": variants, "ratios": report["ratios"]}


def format_scaling(result: dict) -> str:
    names = list(result["sizes"][0]["variants"]) if result["sizes"] else []
    ratio_keys = [k for k in ("dash/grpo", "dash/grpo_tuned", "preemptive/grpo") if any(k in r["ratios"] for r in result["sizes"])]
    s = result["settings"]
    lines = [f"Command: `{result['command']}`" if result["command"] else "",
             f"{s['steps']} steps of {s['prompts_per_step']} prompts x {s['group_size']} completions, completion "
             f"tokens {s['completion_tokens']}, filter fraction {s['filter_frac']}, KL beta {s['beta']}, "
             f"GRPO micro-batch {s['paper_micro_batch']} (paper) / {s['tuned_micro_batch']} (tuned), {s['dtype']}; "
             f"{result['seconds'] / 60:.1f} min in all.", "",
             "| size | parameters | " + " | ".join(f"{n} s (sampling + update)" for n in names) + " | "
             + " | ".join(ratio_keys) + " |",
             "|---|---|" + "---|" * (len(names) + len(ratio_keys))]
    for r in result["sizes"]:
        cells = [f"{v['train_seconds']:.1f} ({v['sampling_seconds']:.1f} + {v['update_seconds']:.1f})"
                 for v in r["variants"].values()]
        ratios = [f"{r['ratios'][k]:.2f}" if k in r["ratios"] else "-" for k in ratio_keys]
        lines.append(f"| {r['size']} | {r['parameters'] / 1e6:.2f}M | " + " | ".join(cells) + " | " + " | ".join(ratios) + " |")
    return "\n".join(line for line in lines if line is not None)
