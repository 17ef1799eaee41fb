"""A whole training run: set up, evaluate, train with checkpoints, evaluate, summarise.

Everything that can fail on bad input (config, task, model path, prompt
length, resume directory) is checked before the run directory is touched.
SIGTERM, SIGINT and SIGHUP stop the run after the current step with a
checkpoint and a summary marked interrupted (``dashrl.train.signals``); a
resume reconciles metrics.jsonl with the checkpoint (``dashrl.train.resume``).
The base model is
evaluated before the first step and the trained one after the last, and the
summary holds both, so every run reports what RL changed. With several
processes (``dashrl.train.distributed``) every process runs this loop; only
process 0 writes the run directory and shows the progress bar.
"""

from __future__ import annotations

import math
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from dashrl.config import Config, load_config
from dashrl.errors import UserError
from dashrl.eval.evaluate import evaluate
from dashrl.models import load_model, load_policy, load_tokenizer, resolve_model_path
from dashrl.progress import progress_bar, resolve as resolve_progress, set_library_progress
from dashrl.rollout.factory import check_engine, make_engine
from dashrl.runlog import RunLog, make_row
from dashrl.tasks import get_task
from dashrl.timing import RunClock, summarize_shares
from dashrl.models.context import check_prompt_lengths, run_problems
from dashrl.train.checkpoint import apply_trainer_state, restore_rng_states, rng_states, save_checkpoint
from dashrl.train.guards import NoSignalWatch, no_signal
from dashrl.train.resume import intact_checkpoint, reconcile_metrics, warn
from dashrl.train.rundir import check_writable
from dashrl.train.signals import GracefulStop
from dashrl.train.distributed import (check_resumable, full_optimizer_state, full_state_dict, init_distributed,
                                      load_full_optimizer_state, shard, shard_model)
from dashrl.models.loading import DTYPES
from dashrl.models.lora import AdaptersOff
from dashrl.train.samples import step_samples
from dashrl.train.trainer import Trainer

HEADLINE = ("greedy/pass@1", "sampled/pass@1")


def seed_everything(seed: int) -> None:
    """Seed every RNG a run touches: Python's, NumPy's and torch's (all devices)."""
    import numpy as np

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


@dataclass
class Setup:
    config: Config
    trainer: Trainer
    resume_from: Path | None
    resume_rows: list[dict] | None = None  # metrics.jsonl reconciled with resume_from
    load_seconds: float = 0.0  # prepare(): task, tokenizer, models, engine (the run's "model_load" stage)
    resume_state: dict | None = None  # resume_from's trainer state, as read once from disk


def resume_config(run_dir: Path, overrides: list[str]) -> Config:
    """The config a run was started with, plus new overrides (e.g. more steps)."""
    if not (run_dir / "config.yaml").is_file():
        raise UserError(f"cannot resume: {run_dir} is not a run directory (no config.yaml)")
    config = load_config(run_dir / "config.yaml", overrides)
    config.log.run_dir = str(run_dir)
    return config


def prepare(config: Config, resume: bool = False, progress: bool | None = None) -> Setup:
    """Load task, models and engine; raises UserError before anything is written.

    ``progress``: show bars (None = ``log.progress``); it also silences the libraries' own bars.
    """
    start = time.perf_counter()
    progress = resolve_progress(progress, config.log.progress)
    set_library_progress(progress)
    run_dir = Path(config.log.run_dir)
    check_writable(run_dir)
    check_engine(config)
    task = get_task(config.task)
    dist = init_distributed(config.model.device, config.dist.timeout_s, config.dist.threads_per_process)
    if config.algo.prompts_per_step % dist.world_size:
        raise UserError(f"algo.prompts_per_step ({config.algo.prompts_per_step}) must be a multiple of the number "
                        f"of processes ({dist.world_size}), so that each samples whole groups")
    if not dist.is_main:  # process 0 builds or fetches a missing model first
        dist.barrier()
    model_path = resolve_model_path(config.model.path, progress=progress and dist.is_main)
    if dist.is_main:
        dist.barrier()
    seed_everything(config.train.seed + dist.rank)  # each process samples its own completions
    tokenizer = load_tokenizer(model_path)
    checkpoint, rows, state = None, None, None
    found = intact_checkpoint(run_dir, lambda ckpt: load_policy(model_path, config.model, ckpt)) if resume else None
    if found is not None:
        checkpoint, policy, state = found
        check_resumable(state["extra"], dist.world_size, fsdp=config.dist.fsdp and dist.enabled)
        rows = reconcile_metrics(run_dir / "metrics.jsonl", state["step"], state["extra"].get("row"))
    else:
        if resume and dist.is_main:
            warn(f"no intact checkpoint in {run_dir / 'checkpoints'} yet: starting the run from step 0")
        policy = load_policy(model_path, config.model)
    policy = policy.to(dist.device)
    policy.train()
    reference = None
    if config.algo.beta > 0 and config.model.lora.enabled:  # the base weights, adapters off: no second copy
        reference = AdaptersOff(policy)
    elif config.algo.beta > 0:  # only then is a reference model loaded
        reference = load_model(model_path, config.model.dtype).to(dist.device).eval().requires_grad_(False)
    fsdp = config.dist.fsdp and dist.enabled  # (ignored with one process)
    engine = make_engine(config, model_path, policy, tokenizer, resumed=checkpoint is not None, rank=dist.rank,
                         may_share=not fsdp)  # FSDP: the engine keeps its own whole copy
    if fsdp:
        policy = shard_model(policy, dist)
        if reference is not None:
            reference = shard_model(reference, dist)
    trainer = Trainer(config, policy, tokenizer, engine, task, reference, dist)
    check_prompt_lengths(policy, tokenizer, trainer.format_prompt, config.sampling.max_new_tokens,
                         run_problems(task, config))
    return Setup(config, trainer, checkpoint, rows, time.perf_counter() - start, resume_state=state)


def _eval(trainer: Trainer, config: Config, problems, progress: bool = False, desc: str = "eval") -> dict:
    dist = trainer.dist  # each process evaluates its share; the counts are gathered
    result = evaluate(trainer.engine, trainer.task, shard(problems, dist.rank, dist.world_size), config.eval,
                      config.sampling.max_new_tokens, seed=dist.rank, format_prompt=trainer.format_prompt,
                      gather=dist.gather_list, progress=progress and dist.is_main, desc=desc)
    return {f"eval/{k}": v for k, v in result.metrics.items()}


def _bar_total(config: Config, step: int, steps_done: int, session_seconds: float, trained_seconds: float) -> int:
    """Steps the run will reach: train.steps, or fewer when train.max_seconds will stop it first (estimated)."""
    limit = config.train.max_seconds
    if limit is None or steps_done == 0:
        return config.train.steps
    left = math.ceil(max(limit - trained_seconds, 0.0) / (session_seconds / steps_done))
    return min(config.train.steps, step + max(left, 1))


def train(setup: Setup, progress: bool | None = None) -> dict | None:
    """Run (or continue) training; returns the summary written to summary.json (None on processes other than 0).

    ``progress``: show bars (None = ``log.progress``). Every second of the
    summary's ``wall_seconds`` is booked to a stage of ``stage_seconds``. The
    summary has ``interrupted`` (the signal's name) when SIGTERM, SIGINT or
    SIGHUP stopped the run; the last completed step is then checkpointed.
    """
    config, trainer = setup.config, setup.trainer
    dist = trainer.dist
    progress = resolve_progress(progress, config.log.progress)
    set_library_progress(progress)
    start_wall = time.perf_counter()
    clock = RunClock()
    clock.add("model_load", setup.load_seconds)
    prior_wall = 0.0
    resume_step = None
    with clock.stage("setup"):
        if setup.resume_from is not None:
            load_sharded = (lambda saved: load_full_optimizer_state(trainer.policy, trainer.optimizer, saved)
                            ) if dist.fsdp else None
            state = apply_trainer_state(setup.resume_state, trainer.optimizer, trainer.scheduler, load_sharded)
            setup.resume_state = None  # applied: do not keep a second copy of the optimizer state
            if "rng_by_rank" in state["extra"]:  # every process continues its own random stream
                restore_rng_states(state["extra"]["rng_by_rank"][dist.rank])
            resume_step = trainer.step = state["step"]
            prior_wall = state["extra"].get("wall_seconds", 0.0)
            clock.restore(state["extra"].get("stage_seconds", {}))
            trainer.skip_problems(trainer.step)
        log = RunLog(Path(config.log.run_dir), config, rows=setup.resume_rows) if dist.is_main else None
        eval_problems = trainer.task.eval_problems(config.eval.num_problems, config.task.eval_seed)

    def wall() -> float:
        return prior_wall + setup.load_seconds + time.perf_counter() - start_wall

    checkpoint_dtype = DTYPES[config.checkpoint.dtype] if config.checkpoint.dtype else None

    def checkpoint(row: dict) -> None:
        """Save the current step with its metrics row inside, so that the row survives any kill."""
        rng_by_rank = dist.gather(rng_states())
        model_state = optimizer_state = None
        if dist.fsdp:  # every process sends its shards; process 0 writes the whole states
            model_state = full_state_dict(trainer.policy)
            optimizer_state = full_optimizer_state(trainer.policy, trainer.optimizer)
        if dist.is_main:
            save_checkpoint(log.dir, trainer.step, trainer.policy, trainer.tokenizer, trainer.optimizer,
                            trainer.scheduler, {"wall_seconds": wall(), "stage_seconds": clock.totals(),
                                                "world_size": dist.world_size, "fsdp": dist.fsdp,
                                                "rng_by_rank": rng_by_rank, "row": make_row(trainer.step, row)},
                            keep_last=config.log.keep_last, dtype=checkpoint_dtype, model_state=model_state,
                            optimizer_state=optimizer_state)

    watch = NoSignalWatch(say=lambda line: tqdm.write(line, file=sys.stderr) if dist.is_main else None)
    saved_step = resume_step  # the step whose checkpoint is on disk
    with GracefulStop() as stop:
        def stopping() -> bool:  # every process stops at the same step
            return bool(dist.all_sum([float(stop.requested)])[0])

        rows = list(setup.resume_rows or [])  # kept equal to metrics.jsonl (RunLog wrote these) from here on
        if resume_step is None:
            with clock.stage("evaluation_before"):
                initial = _eval(trainer, config, eval_problems, progress, "eval before RL")
            with clock.stage("logging"):
                metrics = {**initial, "time/evaluation": clock.seconds["evaluation_before"], "wall_seconds": wall()}
                if log:
                    log.log(0, metrics)
                rows = [make_row(0, metrics)]
        # training seconds so far, for train.max_seconds (evaluation and checkpoints excluded, as in the summary)
        trained_seconds = summarize(rows, 0.0)["train_seconds"]
        session_seconds, steps_done, out_of_time = 0.0, 0, False
        interrupted = stopping()
        bar = progress_bar(config.train.steps, "RL", progress and dist.is_main, initial=trainer.step)
        while trainer.step < config.train.steps and not interrupted:
            t0 = time.perf_counter()
            with clock.stage("training"):
                metrics = trainer.train_step(trainer.next_problems())
            step = trainer.step
            watch.record(metrics)
            step_seconds = time.perf_counter() - t0
            trained_seconds += step_seconds
            session_seconds, steps_done = session_seconds + step_seconds, steps_done + 1
            out_of_time = config.train.max_seconds is not None and trained_seconds >= config.train.max_seconds
            if config.train.max_seconds is not None:
                out_of_time = dist.broadcast(out_of_time)  # every process stops at the same step
            interrupted = stopping()
            last = step == config.train.steps or out_of_time
            if not interrupted and (last or (config.eval.every and step % config.eval.every == 0)):
                stage = "evaluation_after" if last else "evaluation_during"
                t_eval = time.perf_counter()
                with clock.stage(stage):
                    metrics.update(_eval(trainer, config, eval_problems, progress,
                                         "eval after RL" if last else f"eval at step {step}"))
                metrics["time/evaluation"] = time.perf_counter() - t_eval
            with clock.stage("logging"):
                if config.log.samples_every and (step % config.log.samples_every == 0 or step == 1):
                    # the step's first groups, whichever processes sampled them
                    records = step_samples(trainer.records, config.algo.group_size, dist.gather_list)
                    if log:
                        log.write_samples(step, records)
            if last or interrupted or (config.log.save_every and step % config.log.save_every == 0):
                t_ckpt = time.perf_counter()
                with clock.stage("checkpoint"):
                    checkpoint({**metrics, "time/step": step_seconds + metrics.get("time/evaluation", 0.0),
                                "wall_seconds": wall()})
                saved_step = step
                metrics["time/checkpoint"] = time.perf_counter() - t_ckpt
            with clock.stage("logging"):
                # the step with its evaluation and checkpoint; the run's own bookkeeping is in "logging"
                metrics["time/step"] = step_seconds + metrics.get("time/evaluation", 0.0) + metrics.get("time/checkpoint", 0.0)
                metrics["wall_seconds"] = wall()
                if log:
                    log.log(step, metrics)
                rows.append(make_row(step, metrics))
                bar.total = _bar_total(config, step, steps_done, session_seconds, trained_seconds)
                bar.set_postfix(reward=f"{metrics['reward/mean']:.2f}", acc=f"{metrics['reward/accuracy']:.2f}",
                                s_per_step=f"{step_seconds:.2f}")
                bar.update(1)
            if out_of_time:
                break
        bar.close()
        if interrupted and saved_step != trainer.step:  # stopped before its first step (initial evaluation)
            with clock.stage("checkpoint"):
                checkpoint(rows[-1])
        final_missing = not interrupted and bool(rows) and "eval/greedy/pass@1" not in rows[-1]
        if dist.broadcast(final_missing):  # resumed after a stop at the end
            with clock.stage("evaluation_after"):
                final = _eval(trainer, config, eval_problems, progress, "eval after RL")
            if log:
                rows[-1].update(final)
                log.rewrite(rows)
    if not log:
        return None
    with clock.stage("logging"):
        stopped = None
        if out_of_time and trainer.step < config.train.steps:
            stopped = (f"stopped by train.max_seconds={config.train.max_seconds:g}: {trainer.step} of "
                       f"{config.train.steps} steps in {trained_seconds:.0f} s of training")
            if progress:
                print(f"dashrl: {stopped}", file=sys.stderr, flush=True)
    summary = summarize(rows, wall(), clock.totals())
    summary["stopped"] = stopped
    if interrupted:
        summary["interrupted"] = stop.name or "SIGTERM"  # another process's signal stopped this one
    log.write_summary(summary)
    log.close()
    return summary


def summarize(rows: list[dict], wall_seconds: float, stage_seconds: dict[str, float] | None = None) -> dict:
    """Before/after evaluation, wall time by stage, time per training step and each step stage's share.

    ``seconds_per_step`` is the training step alone (sampling to weight sync); evaluation,
    checkpoints and logging are in ``stage_seconds`` beside it.
    """
    evals = [r for r in rows if "eval/greedy/pass@1" in r]
    steps = [r for r in rows if "time/step" in r]
    before = evals[0] if evals else {}
    after = evals[-1] if len(evals) > 1 else {}  # a run stopped before any later evaluation has no "after"
    outside = ("time/evaluation", "time/checkpoint")  # not training work: in stage_seconds
    stage_rows = [{k[5:]: v for k, v in r.items() if k.startswith("time/") and k not in ("time/step", *outside)}
                  for r in steps]
    train_seconds = sum(r["time/step"] - sum(r.get(k, 0.0) for k in outside) for r in steps)
    return {
        "steps": len(steps),
        "wall_seconds": wall_seconds,
        "train_seconds": train_seconds,
        "seconds_per_step": train_seconds / max(len(steps), 1),
        "stage_seconds": dict(stage_seconds or {}),
        "tokens_generated": sum(r.get("tokens/generated", 0) for r in steps),
        "tokens_trained": sum(r.get("tokens/trained", 0) for r in steps),
        "filtered_frac": sum(r.get("filter/dropped_frac", 0.0) for r in steps) / max(len(steps), 1),
        "skipped_steps": sum(r.get("optimizer/skipped", 0.0) for r in steps),
        "nonfinite_steps": sum(r.get("optimizer/nonfinite") or 0.0 for r in steps),
        "no_signal_steps": sum(no_signal(r) for r in steps),
        "reward_errors": sum(r.get("reward/errors") or 0 for r in steps),
        "before": {k[5:]: v for k, v in before.items() if k.startswith("eval/")},
        "after": {k[5:]: v for k, v in after.items() if k.startswith("eval/")},
        "stage_shares": summarize_shares(stage_rows),
    }


def format_summary(summary: dict) -> str:
    """The before/after table printed at the end of a run."""
    keys = [k for k in summary["before"] if k.endswith(("pass@1", "mean_length")) or "pass@" in k]
    lines = ["", f"{'held-out metric':<24}{'before RL':>12}{'after RL':>12}{'change':>10}"]
    for key in keys:
        b, a = summary["before"][key], summary["after"].get(key)
        scale = 1.0 if key.endswith("mean_length") else 100.0
        unit = "" if scale == 1.0 else " %"
        after = f"{a * scale:>12.1f}{(a - b) * scale:>+10.1f}" if a is not None else f"{'-':>12}{'-':>10}"  # (stopped)
        lines.append(f"{key + unit:<24}{b * scale:>12.1f}{after}")
    lines.append(f"\n{summary['steps']} steps in {summary['wall_seconds']:.0f} s: training {summary['train_seconds']:.0f} s "
                 f"({summary['seconds_per_step']:.2f} s/step){_other_stages(summary.get('stage_seconds') or {})}")
    if summary.get("stopped"):
        lines.append(summary["stopped"])
    shares = ", ".join(f"{name} {v['share'] * 100:.0f}%" for name, v in summary["stage_shares"].items() if v["share"] >= 0.005)
    lines.append(f"training step by stage: {shares}")
    return "\n".join(lines)


STAGE_NAMES = {"model_load": "model load", "evaluation_before": "evaluation before", "evaluation_during":
               "evaluation during", "evaluation_after": "evaluation after", "checkpoint": "checkpoints",
               "setup": "setup", "logging": "logging"}


def _other_stages(stage_seconds: dict[str, float]) -> str:
    """", model load 8 s, evaluation before 120 s, ..." for the stages beside training that took any time."""
    parts = [f"{STAGE_NAMES.get(name, name)} {seconds:.0f} s" for name, seconds in stage_seconds.items()
             if name != "training" and seconds >= 0.5]
    return ", " + ", ".join(parts) if parts else ""
