"""A whole training run: set up, evaluate, train with checkpoints, evaluate, summarise.

Everything that can fail on bad input (config, task, model path, resume
directory) is checked before the run directory is touched. The base model is
evaluated before the first step and the trained one after the last, and the
summary holds both, so every run reports what RL changed. With several
processes (``dashrl.train.distributed``) every process runs this loop; only
process 0 writes the run directory and shows the progress bar.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from dashrl.config import Config, load_config
from dashrl.errors import UserError
from dashrl.eval.evaluate import evaluate
from dashrl.models import load_model, load_policy, load_tokenizer, resolve_model_path
from dashrl.rollout.factory import check_engine, make_engine
from dashrl.runlog import RunLog
from dashrl.tasks import get_task
from dashrl.timing import summarize_shares
from dashrl.train.checkpoint import (_restore_rng_states, _rng_states, latest_checkpoint, load_trainer_state,
                                     save_checkpoint)
from dashrl.train.distributed import check_world_size, init_distributed, shard
from dashrl.models.lora import AdaptersOff
from dashrl.train.trainer import Trainer

HEADLINE = ("greedy/pass@1", "sampled/pass@1")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)


@dataclass
class Setup:
    config: Config
    trainer: Trainer
    resume_from: Path | None


def resume_config(run_dir: Path, overrides: list[str]) -> Config:
    """The config a run was started with, plus new overrides (e.g. more steps)."""
    if not (run_dir / "config.yaml").is_file():
        raise UserError(f"cannot resume: {run_dir} is not a run directory (no config.yaml)")
    config = load_config(run_dir / "config.yaml", overrides)
    config.log.run_dir = str(run_dir)
    return config


def prepare(config: Config, resume: bool = False, progress: bool = True) -> Setup:
    """Load task, models and engine; raises UserError before anything is written."""
    run_dir = Path(config.log.run_dir)
    checkpoint = latest_checkpoint(run_dir) if resume else None
    if resume and checkpoint is None:
        raise UserError(f"cannot resume: no complete checkpoint in {run_dir / 'checkpoints'}")
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
    policy = load_policy(model_path, config.model, checkpoint).to(dist.device)
    policy.train()
    reference = None
    if config.algo.beta > 0 and config.model.lora.enabled:  # the base weights, adapters off: no second copy
        reference = AdaptersOff(policy)
    elif config.algo.beta > 0:  # only then is a reference model loaded
        reference = load_model(model_path, config.model.dtype).to(dist.device).eval().requires_grad_(False)
    engine = make_engine(config, model_path, policy, tokenizer, resumed=checkpoint is not None)
    trainer = Trainer(config, policy, tokenizer, engine, task, reference, dist)
    return Setup(config, trainer, checkpoint)


def _eval(trainer: Trainer, config: Config, problems) -> dict:
    dist = trainer.dist  # each process evaluates its share; the counts are gathered
    result = evaluate(trainer.engine, trainer.task, shard(problems, dist.rank, dist.world_size), config.eval,
                      config.sampling.max_new_tokens, seed=dist.rank, format_prompt=trainer.format_prompt,
                      gather=dist.gather_list)
    return {f"eval/{k}": v for k, v in result.metrics.items()}


def train(setup: Setup, progress: bool = True) -> dict | None:
    """Run (or continue) training; returns the summary written to summary.json (None on processes other than 0)."""
    config, trainer = setup.config, setup.trainer
    dist = trainer.dist
    start_wall = time.perf_counter()
    prior_wall = 0.0
    resume_step = None
    if setup.resume_from is not None:
        state = load_trainer_state(setup.resume_from, trainer.optimizer, trainer.scheduler)
        check_world_size(state["extra"].get("world_size", 1), dist)
        if "rng_by_rank" in state["extra"]:  # every process continues its own random stream
            _restore_rng_states(state["extra"]["rng_by_rank"][dist.rank])
        resume_step = trainer.step = state["step"]
        prior_wall = state["extra"].get("wall_seconds", 0.0)
        trainer.skip_problems(trainer.step)
    log = RunLog(Path(config.log.run_dir), config, resume_step) if dist.is_main else None
    eval_problems = trainer.task.eval_problems(config.eval.num_problems, config.task.eval_seed)

    def wall() -> float:
        return prior_wall + time.perf_counter() - start_wall

    def checkpoint() -> None:
        rng_by_rank = dist.gather(_rng_states())
        if dist.is_main:
            save_checkpoint(log.dir, trainer.step, trainer.policy, trainer.tokenizer, trainer.optimizer,
                            trainer.scheduler, {"wall_seconds": wall(), "world_size": dist.world_size,
                                                "rng_by_rank": rng_by_rank}, keep_last=config.log.keep_last)

    if resume_step is None:
        metrics = {**_eval(trainer, config, eval_problems), "wall_seconds": 0.0}
        if log:
            log.log(0, metrics)
    # training seconds so far, for train.max_seconds (evaluation and checkpoints excluded, as in the summary)
    trained_seconds = summarize(log.read_metrics(), 0.0)["train_seconds"] if log else 0.0

    bar = tqdm(total=config.train.steps, initial=trainer.step, desc="RL", disable=not (progress and dist.is_main),
               dynamic_ncols=True)
    while trainer.step < config.train.steps:
        t0 = time.perf_counter()
        metrics = trainer.train_step(trainer.next_problems())
        step = trainer.step
        trained_seconds += time.perf_counter() - t0
        out_of_time = config.train.max_seconds is not None and trained_seconds >= config.train.max_seconds
        if config.train.max_seconds is not None:
            out_of_time = dist.broadcast(out_of_time)  # every process stops at the same step
        last = step == config.train.steps or out_of_time
        if last or (config.eval.every and step % config.eval.every == 0):
            t_eval = time.perf_counter()
            metrics.update(_eval(trainer, config, eval_problems))
            metrics["time/evaluation"] = time.perf_counter() - t_eval
        if last or (config.log.save_every and step % config.log.save_every == 0):
            t_ckpt = time.perf_counter()
            checkpoint()
            metrics["time/checkpoint"] = time.perf_counter() - t_ckpt
        metrics["time/step"] = time.perf_counter() - t0
        metrics["wall_seconds"] = wall()
        if log:
            log.log(step, metrics)
        bar.set_postfix(reward=f"{metrics['reward/mean']:.2f}", acc=f"{metrics['reward/accuracy']:.2f}",
                        s_per_step=f"{metrics['time/step']:.2f}")
        bar.update(1)
        if out_of_time:
            break
    bar.close()
    if not log:
        return None
    summary = summarize(log.read_metrics(), wall())
    log.write_summary(summary)
    log.close()
    return summary


def summarize(rows: list[dict], wall_seconds: float) -> dict:
    """Before/after evaluation, wall time, time per step and each stage's share, from metrics.jsonl."""
    evals = [r for r in rows if "eval/greedy/pass@1" in r]
    steps = [r for r in rows if "time/step" in r]
    before, after = (evals[0], evals[-1]) if evals else ({}, {})
    stage_rows = [{k[5:]: v for k, v in r.items() if k.startswith("time/") and k != "time/step"} for r in steps]
    outside = ("time/evaluation", "time/checkpoint")  # not training work
    train_seconds = sum(r["time/step"] - sum(r.get(k, 0.0) for k in outside) for r in steps)
    return {
        "steps": len(steps),
        "wall_seconds": wall_seconds,
        "train_seconds": train_seconds,
        "seconds_per_step": sum(r["time/step"] for r in steps) / max(len(steps), 1),
        "tokens_generated": sum(r.get("tokens/generated", 0) for r in steps),
        "tokens_trained": sum(r.get("tokens/trained", 0) for r in steps),
        "filtered_frac": sum(r.get("filter/dropped_frac", 0.0) for r in steps) / max(len(steps), 1),
        "skipped_steps": sum(r.get("optimizer/skipped", 0.0) for r in steps),
        "before": {k[5:]: v for k, v in before.items() if k.startswith("eval/")},
        "after": {k[5:]: v for k, v in after.items() if k.startswith("eval/")},
        "stage_shares": summarize_shares(stage_rows),
    }


def format_summary(summary: dict) -> str:
    """The before/after table printed at the end of a run."""
    keys = [k for k in summary["before"] if k.endswith(("pass@1", "mean_length")) or "pass@" in k]
    lines = ["", f"{'held-out metric':<24}{'before RL':>12}{'after RL':>12}{'change':>10}"]
    for key in keys:
        b, a = summary["before"][key], summary["after"].get(key, float("nan"))
        scale = 1.0 if key.endswith("mean_length") else 100.0
        unit = "" if scale == 1.0 else " %"
        lines.append(f"{key + unit:<24}{b * scale:>12.1f}{a * scale:>12.1f}{(a - b) * scale:>+10.1f}")
    lines.append(f"\n{summary['steps']} steps in {summary['wall_seconds']:.0f} s ({summary['seconds_per_step']:.2f} s/step)")
    shares = ", ".join(f"{name} {v['share'] * 100:.0f}%" for name, v in summary["stage_shares"].items() if v["share"] >= 0.005)
    lines.append(f"time by stage: {shares}")
    return "\n".join(lines)
