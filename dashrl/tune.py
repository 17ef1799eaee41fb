"""``dashrl tune``: measure the inference and backprop batch curves, recommend settings.

DASH's observation: the batch size at which the inference engine is most
efficient is far larger than the one at which backpropagation is, so a step
should sample many completions per engine call and backpropagate them in small
micro-batches. This module measures both curves for the configured model on
this machine and picks ``train.generation_batch_size`` and
``train.micro_batch_size`` from them.

What is measured:

- generation: for each batch size b (completions per engine call), wall
  seconds of ``engine.generate`` producing b completions (b // G prompts x G,
  or one prompt x b when b < G), after one untimed warm-up call; completion
  tokens per second (EOS included, no padding), seconds per call, completions
  per second, totals over the repeats (each on different prompts).
- training: for each micro-batch size m, one forward pass (the trainer's
  ``_logprobs`` call), a REINFORCE-style policy-gradient loss and backward on m
  real sampled completions with random +-1 advantages; tokens (prompt +
  completion, unpadded) per second, seconds per micro-batch (median of the
  repeats, after one warm-up pass), samples per second
  and peak memory: ``torch.cuda.max_memory_allocated`` on CUDA (absolute, the
  weights included), on CPU the growth of the resident set size sampled from
  ``/proc/self/statm`` during an untimed pass (approximate).

With ``model.lora.enabled`` the training curve is measured on the LoRA model
(gradients for the adapters only), and the output says which was measured.
``--max-batch`` and ``--max-micro`` bound the two curves; ``--quick`` takes
one timed pass per size and micro-batches up to 16.

Simplifications: the optimizer step, KL to a reference model, PPO replay and
reward scoring are not measured (they do not depend on the batch size, or
scale linearly with rows); one micro-batch is timed in isolation, not a whole
step; completion lengths come from the current model's sampling, so the curves
shift as RL changes them; the CPU memory figure is approximate (the allocator
keeps freed memory, so later sizes may read low); the step-time estimates
multiply the measured per-call and per-micro-batch times.
"""

from __future__ import annotations

import gc
import math
import os
import statistics
import threading
import time
from pathlib import Path
from typing import Callable

import torch

from dashrl.algo.losses import loss_numerator, policy_gradient_loss
from dashrl.train.trainer import completion_logprobs
from dashrl.config import Config, to_yaml
from dashrl.errors import UserError
from dashrl.rollout.engine import SamplingParams
from dashrl.tasks.prompts import prompt_formatter
from dashrl.train.batch import Sample, collate

GEN_TOLERANCE = 0.05  # generation: prefer a larger batch within 5% of the best tokens/s
TRAIN_FRACTION = 0.90  # training: smallest micro-batch reaching 90% of the best tokens/s

Progress = Callable[[str], None] | None


# ------------------------------------------------------------------ helpers


def divides_group(size: int, group_size: int) -> bool:
    """Whole groups stay together: size is a multiple of G or divides it."""
    return size >= 1 and (size % group_size == 0 or group_size % size == 0)


def candidate_sizes(limit: int, group_size: int) -> list[int]:
    """Sizes to measure up to ``limit``: divisors of G, powers of two and G x powers of two, all respecting the group rule."""
    sizes = {d for d in range(1, min(group_size, limit) + 1) if group_size % d == 0}
    b = 1
    while b <= limit:
        sizes.add(b)
        if group_size * b <= limit:
            sizes.add(group_size * b)
        b *= 2
    return sorted(s for s in sizes if divides_group(s, group_size))


def _sync() -> None:
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


def _call_plan(prompts: list[str], size: int, group_size: int, offset: int) -> tuple[list[str], int]:
    """(prompts, n) of one engine call producing ``size`` completions."""
    count, n = (size // group_size, group_size) if size >= group_size else (1, size)
    return [prompts[(offset + i) % len(prompts)] for i in range(count)], n


def _rss_bytes() -> int | None:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


class _PeakRSS:
    """Samples the resident set size in a background thread; ``growth`` = peak - start (approx)."""

    def __init__(self, interval: float = 0.001):
        self.interval = interval
        self.growth: int | None = None

    def __enter__(self) -> "_PeakRSS":
        gc.collect()
        self._start = _rss_bytes()
        self._peak = self._start
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        if self._start is not None:
            self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._peak = max(self._peak, _rss_bytes() or 0)

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._start is not None:
            self._thread.join()
            self._peak = max(self._peak, _rss_bytes() or 0)
            self.growth = max(0, self._peak - self._start)


# --------------------------------------------------------------- measuring


def measure_generation(
    engine,
    prompts: list[str],
    group_size: int,
    batch_sizes: list[int],
    sampling: SamplingParams,
    repeats: int = 1,
    progress: Progress = None,
) -> list[dict]:
    """One row per batch size: completion tokens/s, seconds per engine call, completions/s."""
    if not prompts:
        raise ValueError("measure_generation needs at least one prompt")
    for b in batch_sizes:
        if not divides_group(b, group_size):
            raise ValueError(f"generation batch {b} and group size {group_size} must divide one another")
    rows = []
    for b in batch_sizes:
        if progress:
            progress(f"generation: batch {b}")
        chosen, n = _call_plan(prompts, b, group_size, 0)
        engine.generate(chosen, n, sampling)  # warm-up, untimed
        _sync()
        seconds, tokens, completions = 0.0, 0, 0
        for r in range(max(repeats, 1)):
            chosen, n = _call_plan(prompts, b, group_size, (r + 1) * len(chosen))
            start = time.perf_counter()
            groups = engine.generate(chosen, n, sampling)
            _sync()
            seconds += time.perf_counter() - start
            tokens += sum(len(c.token_ids) for group in groups for c in group)
            completions += sum(len(group) for group in groups)
        calls = max(repeats, 1)
        seconds = max(seconds, 1e-9)
        rows.append({
            "batch_size": b,
            "tokens_per_s": tokens / seconds,
            "seconds_per_call": seconds / calls,
            "completions_per_s": completions / seconds,
            "mean_completion_tokens": tokens / max(completions, 1),
        })
    return rows


def make_samples(engine, prompts: list[str], group_size: int, count: int, sampling: SamplingParams,
                 seed: int = 0) -> list[Sample]:
    """``count`` (rounded up to whole groups) real completions from one engine call, advantages random +-1."""
    num_prompts = max(1, math.ceil(count / group_size))
    chosen = [prompts[i % len(prompts)] for i in range(num_prompts)]
    groups = engine.generate(chosen, group_size, sampling)
    signs = torch.randint(0, 2, (num_prompts * group_size,), generator=torch.Generator().manual_seed(seed)) * 2 - 1
    samples = []
    for i, group in enumerate(groups):
        for c in group:
            samples.append(Sample(f"tune-{i}", c.prompt_ids, c.token_ids, 0.0, float(signs[len(samples)]), c.finish_reason))
    return samples


def measure_training(
    policy,
    tokenizer,
    samples: list[Sample],
    micro_batch_sizes: list[int],
    temperature: float,
    repeats: int = 3,
    progress: Progress = None,
) -> list[dict]:
    """One row per micro-batch size: tokens/s, seconds per micro-batch, samples/s, peak memory."""
    if not samples:
        raise ValueError("measure_training needs at least one sample")
    device = next(policy.parameters()).device
    cuda = device.type == "cuda"
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    was_training = policy.training
    policy.train()

    def step(mb) -> None:
        logp = completion_logprobs(policy, mb, temperature)
        per_token, _ = policy_gradient_loss(logp, logp.detach(), mb.advantages)
        (loss_numerator(per_token, mb.completion_mask, "grpo") / mb.input_ids.shape[0]).backward()
        policy.zero_grad(set_to_none=True)

    rows = []
    try:
        for m in micro_batch_sizes:
            if progress:
                progress(f"training: micro-batch {m}")
            chosen = [samples[i % len(samples)] for i in range(m)]
            tokens = sum(s.num_tokens for s in chosen)
            mb = collate(chosen, pad_id).to(device)
            # warm-up pass, untimed: also where peak memory is read
            if cuda:
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats(device)
                step(mb)
                _sync()
                peak, kind = torch.cuda.max_memory_allocated(device), "cuda"
            else:
                with _PeakRSS() as rss:
                    step(mb)
                peak, kind = rss.growth, ("rss-approx" if rss.growth is not None else None)
            times = []
            for _ in range(max(repeats, 1)):
                _sync()
                start = time.perf_counter()
                step(mb)
                _sync()
                times.append(time.perf_counter() - start)
            seconds = max(statistics.median(times), 1e-9)  # the same micro-batch each time: the median resists noise
            rows.append({
                "micro_batch_size": m,
                "tokens_per_s": tokens / seconds,
                "seconds_per_micro_batch": seconds,
                "samples_per_s": m / seconds,
                "peak_memory_bytes": peak,
                "memory_kind": kind,
            })
    finally:
        policy.zero_grad(set_to_none=True)
        policy.train(was_training)
    return rows


# -------------------------------------------------------------- recommending


def _base(rows: list[dict], key: str) -> dict:
    return min(rows, key=lambda r: r[key])


def _step_seconds(gen_row: dict | None, train_row: dict, rows_per_step: int, group_size: int) -> float | None:
    """Estimated generation + forward/backward seconds of one step (M x G rows)."""
    if gen_row is None:
        return None
    gen, micro = gen_row["batch_size"], train_row["micro_batch_size"]
    prompts = max(rows_per_step // group_size, 1)
    calls = math.ceil(prompts / (gen // group_size)) if gen >= group_size else prompts * (group_size // gen)
    return calls * gen_row["seconds_per_call"] + math.ceil(rows_per_step / micro) * train_row["seconds_per_micro_batch"]


def recommend(gen_rows: list[dict], train_rows: list[dict], rows_per_step: int, group_size: int,
              memory_limit_bytes: int | None) -> dict:
    """Pick generation and micro-batch sizes from the measured curves (see the module docstring).

    generation batch: the highest tokens/s, preferring the larger size when within 5% of the best,
    among sizes <= rows_per_step that respect the group rule. micro-batch: the smallest size reaching
    90% of the best tokens/s among sizes that fit ``memory_limit_bytes`` (and the same rules).
    """
    if not gen_rows or not train_rows:
        raise UserError("tune: nothing was measured")
    gen_ok = [r for r in gen_rows if r["batch_size"] <= rows_per_step and divides_group(r["batch_size"], group_size)]
    if not gen_ok:
        raise UserError(f"tune: no measured generation batch is <= M x G = {rows_per_step} and divides "
                        f"with group size {group_size}")
    shape_ok = [r for r in train_rows
                if r["micro_batch_size"] <= rows_per_step and divides_group(r["micro_batch_size"], group_size)]
    fits = [r for r in shape_ok if memory_limit_bytes is None or r.get("peak_memory_bytes") is None
            or r["peak_memory_bytes"] <= memory_limit_bytes]
    too_big = sorted(r["micro_batch_size"] for r in shape_ok if r not in fits)
    if not fits:
        raise UserError(f"tune: no measured micro-batch fits the memory limit of {memory_limit_bytes} bytes")

    best_gen = max(r["tokens_per_s"] for r in gen_ok)
    gen_row = max((r for r in gen_ok if r["tokens_per_s"] >= (1 - GEN_TOLERANCE) * best_gen), key=lambda r: r["batch_size"])
    best_train = max(r["tokens_per_s"] for r in fits)
    train_row = min((r for r in fits if r["tokens_per_s"] >= TRAIN_FRACTION * best_train),
                    key=lambda r: r["micro_batch_size"])
    gen, micro = gen_row["batch_size"], train_row["micro_batch_size"]
    raised = gen < micro  # the trainer splits each engine call's rows, so gen < micro would shrink micro-batches
    if raised:
        gen_row = next((r for r in gen_rows if r["batch_size"] == micro), None)
        gen = micro

    gen_base, train_base = _base(gen_rows, "batch_size"), _base(train_rows, "micro_batch_size")
    gen_speedup = (gen_row["tokens_per_s"] / gen_base["tokens_per_s"]) if gen_row else None
    train_speedup = train_row["tokens_per_s"] / train_base["tokens_per_s"]
    standard_gen = next((r for r in gen_rows if r["batch_size"] == micro), None)
    rec = {
        "generation_batch_size": gen,
        "micro_batch_size": micro,
        "ratio": gen / micro,
        "generation_tokens_per_s": gen_row["tokens_per_s"] if gen_row else None,
        "training_tokens_per_s": train_row["tokens_per_s"],
        "generation_speedup": gen_speedup,
        "generation_speedup_base": gen_base["batch_size"],
        "training_speedup": train_speedup,
        "training_speedup_base": train_base["micro_batch_size"],
        "excluded_by_memory": too_big,
        "rows_per_step": rows_per_step,
        "estimated_step_seconds": _step_seconds(gen_row, train_row, rows_per_step, group_size),
        "estimated_step_seconds_standard": _step_seconds(standard_gen, train_row, rows_per_step, group_size),
    }
    rec["explanation"] = _explain(rec, gen_ok, fits, raised)
    return rec


def _explain(rec: dict, gen_ok: list[dict], fits: list[dict], raised: bool) -> str:
    gen, micro, rows = rec["generation_batch_size"], rec["micro_batch_size"], rec["rows_per_step"]
    largest_gen = max(r["batch_size"] for r in gen_ok)
    largest_micro = max(r["micro_batch_size"] for r in fits)
    speed = (f" ({rec['generation_speedup']:.1f}x over batch {rec['generation_speedup_base']})"
             if rec["generation_speedup"] is not None else "")
    if raised:
        gen_part = f"generation throughput is best at small batches, but the engine call must hold a micro-batch, so batch {gen}"
    elif gen == largest_gen:
        capped = ", the step's M x G," if gen == rows else ""
        gen_part = f"generation throughput keeps rising up to batch {gen}{capped}{speed}"
    else:
        gen_part = f"generation throughput peaks at batch {gen}{speed} (larger batches are no faster)"
    tspeed = f"{rec['training_speedup']:.1f}x over micro-batch {rec['training_speedup_base']}"
    if micro == largest_micro:
        train_part = f"training throughput keeps rising up to micro-batch {micro} ({tspeed})"
    else:
        train_part = f"training throughput is flat past micro-batch {micro} (within 90% of its best; {tspeed})"
    if rec["excluded_by_memory"]:
        train_part += f"; micro-batches {rec['excluded_by_memory']} exceed the memory limit"
    sample = f"a whole step ({gen} completions)" if gen == rows else f"{gen} completions"
    text = f"{gen_part} while {train_part}: sample {sample} per engine call, backpropagate in micro-batches of {micro}"
    if gen == micro and gen < rows:
        text += " (the standard schedule: larger engine calls would not be faster here)"
    est, std = rec["estimated_step_seconds"], rec["estimated_step_seconds_standard"]
    if est is not None and std is not None and gen != micro:
        text += (f". Estimated generation + backprop per step: {est:.2f} s, vs {std:.2f} s with one engine call "
                 f"per micro-batch ({std / est:.1f}x)")
    return text


# --------------------------------------------------------------- reporting


def _bar(value: float, best: float, width: int) -> str:
    return "#" * max(1, round(width * value / best)) if best > 0 else ""


def _mib(n: int | None) -> str:
    return "-" if n is None else f"{n / 2**20:.1f}"


def format_curves(gen_rows: list[dict], train_rows: list[dict], rec: dict | None = None, width: int = 30,
                  mode: str | None = None) -> str:
    """Both curves as plain-text tables with a bar of tokens/s; the recommended rows are marked '<'."""
    lines = ["generation (completions per engine call)",
             f"{'batch':>7}{'tokens/s':>11}{'s/call':>9}{'compl/s':>10}  tokens/s"]
    best = max((r["tokens_per_s"] for r in gen_rows), default=0)
    for r in gen_rows:
        mark = " <" if rec and r["batch_size"] == rec["generation_batch_size"] else ""
        lines.append(f"{r['batch_size']:>7}{r['tokens_per_s']:>11.0f}{r['seconds_per_call']:>9.3f}"
                     f"{r['completions_per_s']:>10.1f}  {_bar(r['tokens_per_s'], best, width)}{mark}")
    kinds = {r.get("memory_kind") for r in train_rows}
    mem_head = "peak MiB" if kinds == {"cuda"} else "RSS+ MiB"
    lines += ["", f"training (forward + backward per micro-batch{': ' + mode if mode else ''})",
              f"{'micro':>7}{'tokens/s':>11}{'s/mb':>9}{'rows/s':>10}{mem_head:>10}  tokens/s"]
    best = max((r["tokens_per_s"] for r in train_rows), default=0)
    for r in train_rows:
        mark = " <" if rec and r["micro_batch_size"] == rec["micro_batch_size"] else ""
        lines.append(f"{r['micro_batch_size']:>7}{r['tokens_per_s']:>11.0f}{r['seconds_per_micro_batch']:>9.3f}"
                     f"{r['samples_per_s']:>10.1f}{_mib(r.get('peak_memory_bytes')):>10}  "
                     f"{_bar(r['tokens_per_s'], best, width)}{mark}")
    if "rss-approx" in kinds:
        lines.append("(memory: growth of the process's resident set during one pass, approx)")
    elif "cuda" in kinds:
        lines.append("(memory: torch.cuda.max_memory_allocated during one pass, weights included)")
    return "\n".join(lines)


def format_recommendation(rec: dict) -> str:
    return "\n".join([
        "recommended:",
        f"  train.generation_batch_size = {rec['generation_batch_size']}",
        f"  train.micro_batch_size      = {rec['micro_batch_size']}",
        f"  (ratio {rec['ratio']:g}; M x G = {rec['rows_per_step']})",
        "",
        rec["explanation"],
    ])


def write_tuned_config(config: Config, rec: dict, path: str | Path) -> Path:
    """Write ``config`` with the recommended batch sizes as YAML; returns the path."""
    path = Path(path)
    data = config.model_dump(mode="json")
    data["train"]["generation_batch_size"] = rec["generation_batch_size"]
    data["train"]["micro_batch_size"] = rec["micro_batch_size"]
    if data["train"].get("micro_batch_tokens") is not None:  # a token budget would override the row count
        data["train"]["micro_batch_tokens"] = None
    tuned = Config.model_validate(data)
    gen_tps, train_tps = rec.get("generation_tokens_per_s"), rec["training_tokens_per_s"]
    gen_note = f" ({gen_tps:.0f} tokens/s)" if gen_tps is not None else ""
    header = (f"# dashrl train {path}\n"
              f"# written by dashrl tune: generation batch {rec['generation_batch_size']}{gen_note}, "
              f"micro-batch {rec['micro_batch_size']} ({train_tps:.0f} tokens/s) measured on this machine\n")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(header + to_yaml(tuned))
    return path


# ------------------------------------------------------------ orchestration


QUICK_MAX_MICRO = 16  # --quick: training curve up to this micro-batch, one timed pass per size


def planned_sizes(config: Config, max_batch: int | None = None, max_micro: int | None = None,
                  quick: bool = False) -> tuple[list[int], list[int]]:
    """(generation batch sizes, micro-batch sizes) to measure: up to max(M x G, 8) and min(64, M x G) by default,
    or the bounds given; ``quick`` caps the micro-batches at QUICK_MAX_MICRO. Raises UserError if none fits."""
    G, M = config.algo.group_size, config.algo.prompts_per_step
    rows_per_step = M * G
    if max_micro is None:
        max_micro = QUICK_MAX_MICRO if quick else 64
    gen_sizes = candidate_sizes(max_batch if max_batch is not None else max(rows_per_step, 8), G)
    micro_sizes = candidate_sizes(min(max_micro, rows_per_step), G)
    if not gen_sizes:
        raise UserError(f"--max-batch {max_batch}: no generation batch up to it divides with group size {G}")
    if not micro_sizes:
        raise UserError(f"--max-micro {max_micro}: no micro-batch up to it divides with group size {G}")
    return gen_sizes, micro_sizes


def training_mode(policy) -> str:
    """What the training curve measures: the LoRA adapters' backward pass or all weights'."""
    from dashrl.models.lora import is_lora

    if not is_lora(policy):
        return "backward through all weights"
    cfg = next(iter(policy.peft_config.values()))
    trainable = sum(p.numel() for p in policy.parameters() if p.requires_grad)
    return (f"backward through the LoRA adapters only (r={cfg.r}, alpha={cfg.lora_alpha:g}, "
            f"{trainable:,} trainable parameters)")


def tune(config: Config, policy, tokenizer, engine, task, max_batch: int | None = None,
         gen_repeats: int = 2, train_repeats: int = 3, max_micro: int | None = None, progress: Progress = None,
         quick: bool = False) -> dict:
    """Measure both curves for ``config`` and recommend; returns {generation, training, recommendation, mode}.

    ``quick``: one timed pass per size and micro-batches up to QUICK_MAX_MICRO (unless ``max_micro``).
    """
    G, M = config.algo.group_size, config.algo.prompts_per_step
    rows_per_step = M * G
    gen_sizes, micro_sizes = planned_sizes(config, max_batch, max_micro, quick)
    if quick:
        gen_repeats, train_repeats = 1, 1
    sampling = SamplingParams(temperature=config.sampling.temperature, top_p=config.sampling.top_p,
                              top_k=config.sampling.top_k, max_new_tokens=config.sampling.max_new_tokens)
    torch.manual_seed(config.train.seed)
    stream = task.train_stream(config.task.train_seed)
    format_prompt = prompt_formatter(config.task, tokenizer)  # the prompts training would send
    prompts = [format_prompt(next(stream)) for _ in range(max(64, 2 * math.ceil(max(gen_sizes) / G)))]
    gen_rows = measure_generation(engine, prompts, G, gen_sizes, sampling, repeats=gen_repeats, progress=progress)
    if progress:
        progress(f"sampling {max(micro_sizes)} completions for the training measurement")
    samples = make_samples(engine, prompts, G, max(micro_sizes), sampling, seed=config.train.seed)
    train_rows = measure_training(policy, tokenizer, samples, micro_sizes, config.sampling.temperature,
                                  repeats=train_repeats, progress=progress)
    device = next(policy.parameters()).device
    limit = None
    if device.type == "cuda":
        limit = int(0.9 * torch.cuda.get_device_properties(device).total_memory)
    rec = recommend(gen_rows, train_rows, rows_per_step, G, limit)
    return {"generation": gen_rows, "training": train_rows, "recommendation": rec, "mode": training_mode(policy)}
