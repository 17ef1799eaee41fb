"""Supervised fine-tuning baselines: SFT-H (reference solutions) and SFT-M (distillation).

SFT-H (``sft.source=reference``) fine-tunes on the task's reference solutions
(``Problem.solution``); on the testbed those are written in a concise "human"
style, off the base model's step-by-step distribution, as MATH solutions are
to a small model (``dashrl.testbed.arithmetic.human_solution``). SFT-M (``sft.source=teacher``) is rejection-sampled
distillation: sample ``sft.teacher_samples`` completions per prompt from a
teacher model, keep only the ones the task's verifier scores as correct (each
distinct text once), fine-tune on them.

Both go through the RL pipeline's pieces: prompts from the task's training
stream, ``Sample`` rows collated into ``MicroBatch`` tensors (prompt left-padded,
completion right-padded, see ``dashrl.train.batch``), the same held-out
evaluation before and after, and the same run output (config.yaml,
metrics.jsonl with ``time/<stage>``, checkpoints, summary.json). The loss is the
mean negative log-likelihood over the step's completion tokens: prompt tokens
and padding get zero weight.

Simplifications: the data set is built once, up front, and cycled in a seeded
shuffled order, ``sft.batch_size`` examples per optimizer step. Teacher sampling
and verification are charged to the first step (stages ``generation`` and
``reward``), so the run's time tables include them. No mid-run resume: a run
is started from the beginning (``dashrl study`` re-runs an unfinished one).
SIGTERM, SIGINT or SIGHUP (``dashrl.train.signals``) end the run after the
current step: that step's model is checkpointed and the summary is marked
``interrupted``, so the model trained so far is kept.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm import tqdm
from transformers import get_scheduler

from dashrl.config import Config
from dashrl.errors import UserError
from dashrl.eval.evaluate import evaluate
from dashrl.models import load_model, load_policy, load_tokenizer, resolve_model_path
from dashrl.rollout.engine import Engine, SamplingParams
from dashrl.rollout.factory import push_weights
from dashrl.rollout.hf_engine import HFEngine
from dashrl.runlog import RunLog
from dashrl.tasks import get_task
from dashrl.tasks.base import Problem, Task, score_all
from dashrl.tasks.prompts import PromptFormatter, prompt_formatter, raw_prompt
from dashrl.timing import StageTimer
from dashrl.train.batch import MicroBatch, Sample, collate, split_rows
from dashrl.train.checkpoint import save_checkpoint
from dashrl.train.signals import GracefulStop
from dashrl.models.lora import plain_copy
from dashrl.train.trainer import completion_logprobs

TESTBED_TEACHER = "testbed-teacher"


def load_task(config: Config) -> Task:
    """The configured task (one place that knows how ``get_task`` is called)."""
    return get_task(config.task)


# ---------------------------------------------------------------- data


def to_example(tokenizer, problem_id: str, prompt: str, completion: str) -> Sample:
    """One SFT row: the prompt string as the engine tokenizes it, then the completion and EOS.

    An SFT example is a ``Sample`` with reward 1 (a correct answer), so it
    collates exactly like an RL row; its advantage is not used by the SFT loss.
    """
    prompt_ids = tuple(tokenizer(prompt)["input_ids"])
    completion_ids = tuple(tokenizer(completion, add_special_tokens=False)["input_ids"]) + (tokenizer.eos_token_id,)
    return Sample(problem_id, prompt_ids, completion_ids, reward=1.0, advantage=1.0)


def require_solutions(problems: list[Problem], task_name: str) -> None:
    """A UserError naming the first problem without a reference solution (SFT-H needs them all)."""
    missing = next((p.id for p in problems if not p.solution), None)
    if missing is not None:
        raise UserError(f"task '{task_name}' has no reference solution for problem '{missing}' "
                        "(SFT-H needs Problem.solution; use sft.source=teacher)")


def reference_examples(tokenizer, problems: list[Problem], task_name: str,
                       format_prompt: PromptFormatter = raw_prompt) -> list[Sample]:
    """SFT-H data: each problem's reference solution after its formatted prompt."""
    require_solutions(problems, task_name)
    return [to_example(tokenizer, p.id, format_prompt(p), p.solution) for p in problems]


@dataclass
class DistillStats:
    """What rejection sampling produced: completions sampled, verified correct, kept (distinct correct)."""

    sampled: int = 0
    correct: int = 0
    kept: int = 0
    prompts_with_any: int = 0


def teacher_examples(engine: Engine, task: Task, problems: list[Problem], tokenizer, samples: int,
                     sampling: SamplingParams, prompts_per_call: int, timer: StageTimer | None = None,
                     format_prompt: PromptFormatter = raw_prompt,
                     teacher_format_prompt: PromptFormatter | None = None) -> tuple[list[Sample], DistillStats]:
    """SFT-M data: ``samples`` teacher completions per problem, only the verified-correct ones kept.

    A completion is kept when the task scores it >= 1; identical correct texts of
    one problem are kept once. The teacher sees ``teacher_format_prompt(problem)``
    (its own chat template; default ``format_prompt``); rows are tokenized with the
    student's ``tokenizer`` after the student's ``format_prompt(problem)``.
    Sampling and scoring time go to ``timer``'s ``generation`` and ``reward`` stages.
    """
    teacher_format_prompt = teacher_format_prompt or format_prompt
    timer = timer or StageTimer()
    stats = DistillStats()
    out: list[Sample] = []
    for start in range(0, len(problems), prompts_per_call):
        chunk = problems[start : start + prompts_per_call]
        with timer.stage("generation"):
            groups = engine.generate([teacher_format_prompt(p) for p in chunk], samples, sampling)
        texts = [c.text for group in groups for c in group]
        with timer.stage("reward"):
            results = score_all(task, texts, [p for p in chunk for _ in range(samples)])
        for i, problem in enumerate(chunk):
            seen: set[str] = set()
            for text, result in zip(texts[i * samples : (i + 1) * samples], results[i * samples : (i + 1) * samples]):
                stats.sampled += 1
                if result.score < 1.0:
                    continue
                stats.correct += 1
                if text not in seen:
                    seen.add(text)
                    out.append(to_example(tokenizer, problem.id, format_prompt(problem), text))
            stats.prompts_with_any += bool(seen)
    stats.kept = len(out)
    return out, stats


def batches(examples: list[Sample], batch_size: int, seed: int):
    """Endless batches of ``batch_size`` examples: seeded shuffles of the data set, one epoch after another."""
    rng = random.Random(seed)
    order: list[int] = []
    while True:
        batch = []
        while len(batch) < batch_size:
            if not order:
                order = list(range(len(examples)))
                rng.shuffle(order)
            batch.append(examples[order.pop()])
        yield batch


# ---------------------------------------------------------------- loss


def sft_loss_numerator(logp: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Summed negative log-likelihood of the completion tokens; divide by the step's token count.

    logp: (B, C) log-probs of the completion tokens; mask: (B, C), 1 on real
    completion tokens, 0 on padding. Prompt tokens never enter: ``logp`` holds
    completion positions only.
    """
    return -(logp * mask).sum()


def micro_batch_nll(model, mb: MicroBatch) -> torch.Tensor:
    """Summed completion-token NLL of one micro-batch under ``model`` (prompt tokens excluded)."""
    return sft_loss_numerator(completion_logprobs(model, mb, temperature=1.0), mb.completion_mask)


def sft_step(policy, optimizer, scheduler, batch: list[Sample], pad_id: int, cfg: Config) -> dict:
    """One optimizer step on ``batch``: micro-batches of ``train.micro_batch_size`` rows, token-mean NLL, clip, step."""
    timer = StageTimer()
    numerator = 0.0
    tokens = sum(len(s.completion_ids) for s in batch)
    with timer.stage("forward_backward", tokens=sum(s.num_tokens for s in batch)):
        for rows in split_rows(batch, cfg.train.micro_batch_size):
            nll = micro_batch_nll(policy, collate(rows, pad_id).to(policy.device))
            (nll / tokens).backward()  # the step's loss is the token mean over all its micro-batches
            numerator += nll.item()
    with timer.stage("optimizer"):
        lr = scheduler.get_last_lr()[0]
        grad_norm = torch.nn.utils.clip_grad_norm_(policy.parameters(), cfg.train.max_grad_norm)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
    return {"loss": numerator / tokens, "grad_norm": float(grad_norm), "lr": lr,
            "completion/mean_length": tokens / len(batch), "tokens/trained": sum(s.num_tokens for s in batch),
            **timer.reset()}


# ---------------------------------------------------------------- a run


@dataclass
class SFTSetup:
    config: Config
    task: Task
    policy: object
    tokenizer: object
    engine: HFEngine
    format_prompt: PromptFormatter
    teacher_path: str | None
    train_problems: list[Problem] = field(default_factory=list)


def resolve_teacher(path: str, progress: bool = True) -> str:
    """'testbed-teacher' -> the cached stronger testbed checkpoint (built on first use); else a model path."""
    if path == TESTBED_TEACHER:
        from dashrl.testbed.pretrain import ensure_teacher_checkpoint

        return str(ensure_teacher_checkpoint(progress=progress))
    return resolve_model_path(path, progress=progress)


def prepare_sft(config: Config, progress: bool = True) -> SFTSetup:
    """Load task, student and (for SFT-M) check the teacher; raises UserError before anything is written."""
    task = load_task(config)
    stream = task.train_stream(config.task.train_seed)
    problems = [next(stream) for _ in range(config.sft.num_prompts)]
    teacher_path = None
    if config.sft.source == "reference":
        require_solutions(problems, config.task.name)
    else:
        teacher_path = resolve_teacher(config.sft.teacher, progress)
    model_path = resolve_model_path(config.model.path, progress=progress)
    torch.manual_seed(config.train.seed)
    tokenizer = load_tokenizer(model_path)
    policy = load_policy(model_path, config.model)  # with LoRA adapters when model.lora.enabled
    policy.train()
    engine = HFEngine(plain_copy(policy), tokenizer)
    format_prompt = prompt_formatter(config.task, tokenizer)
    return SFTSetup(config, task, policy, tokenizer, engine, format_prompt, teacher_path, problems)


def build_examples(setup: SFTSetup, timer: StageTimer, progress: bool = True) -> tuple[list[Sample], dict]:
    """The run's data set and what it is made of (logged at step 0)."""
    cfg = setup.config
    if cfg.sft.source == "reference":
        examples = reference_examples(setup.tokenizer, setup.train_problems, cfg.task.name, setup.format_prompt)
        return examples, {"sft/examples": len(examples)}
    teacher_tokenizer = load_tokenizer(setup.teacher_path)
    engine = HFEngine(load_model(setup.teacher_path, cfg.model.dtype), teacher_tokenizer)
    sampling = SamplingParams(temperature=cfg.sft.teacher_temperature, max_new_tokens=cfg.sampling.max_new_tokens)
    if progress:
        print(f"sft: sampling {cfg.sft.teacher_samples} completions for each of {len(setup.train_problems)} prompts "
              f"from the teacher {setup.teacher_path}", flush=True)
    with torch.random.fork_rng():
        torch.manual_seed(cfg.train.seed)
        examples, stats = teacher_examples(engine, setup.task, setup.train_problems, setup.tokenizer,
                                           cfg.sft.teacher_samples, sampling,
                                           max(1, cfg.eval.batch_size // cfg.sft.teacher_samples), timer,
                                           setup.format_prompt, prompt_formatter(cfg.task, teacher_tokenizer))
    if not examples:
        raise UserError(f"the teacher {cfg.sft.teacher} got none of {stats.sampled} sampled completions right; "
                        "nothing to distill (try more sft.teacher_samples or a stronger teacher)")
    return examples, {"sft/examples": len(examples), "sft/teacher_sampled": stats.sampled,
                      "sft/teacher_correct_frac": stats.correct / stats.sampled,
                      "sft/prompts_with_correct": stats.prompts_with_any}


def _eval(setup: SFTSetup, problems: list[Problem], progress: bool = False, desc: str = "eval") -> dict:
    push_weights(setup.engine, setup.policy)
    cfg = setup.config
    result = evaluate(setup.engine, setup.task, problems, cfg.eval, cfg.sampling.max_new_tokens,
                      format_prompt=setup.format_prompt, progress=progress, desc=desc)
    return {f"eval/{k}": v for k, v in result.metrics.items()}


def train_sft(setup: SFTSetup, progress: bool = True) -> dict:
    """Build the data set, fine-tune for ``train.steps`` optimizer steps, evaluate; returns the summary."""
    from dashrl.train.run import summarize

    cfg, policy = setup.config, setup.policy
    start = time.perf_counter()
    log = RunLog(Path(cfg.log.run_dir), cfg)
    eval_problems = setup.task.eval_problems(cfg.eval.num_problems, cfg.task.eval_seed)
    data_timer = StageTimer()
    with GracefulStop() as stop:  # a signal ends the run after the current step (or before the first)
        examples, data_stats = build_examples(setup, data_timer, progress)
        log.log(0, {**_eval(setup, eval_problems, progress, "eval before SFT"), **data_stats,
                    "wall_seconds": time.perf_counter() - start})
        optimizer = torch.optim.AdamW([p for p in policy.parameters() if p.requires_grad],
                                      lr=cfg.sft.lr or cfg.train.lr, betas=cfg.train.adam_betas,
                                      weight_decay=cfg.train.weight_decay)
        scheduler = get_scheduler("constant_with_warmup" if cfg.train.lr_schedule == "constant"
                                  else cfg.train.lr_schedule, optimizer, num_warmup_steps=cfg.train.warmup_steps,
                                  num_training_steps=cfg.train.steps)
        data = batches(examples, cfg.sft.batch_size, cfg.train.seed)
        bar = tqdm(total=cfg.train.steps, desc="SFT", disable=not progress, dynamic_ncols=True)
        interrupted = _sft_loop(setup, log, optimizer, scheduler, data, data_timer, eval_problems, bar, start,
                                stop, progress)
        bar.close()
    summary = summarize(log.read_metrics(), time.perf_counter() - start)
    summary["sft"] = {"source": cfg.sft.source, "teacher": setup.teacher_path, **data_stats}
    if interrupted:
        summary["interrupted"] = interrupted
    log.write_summary(summary)
    log.close()
    return summary


def _sft_loop(setup: SFTSetup, log: RunLog, optimizer, scheduler, data, data_timer: StageTimer,
              eval_problems: list[Problem], bar, start: float, stop: GracefulStop, progress: bool) -> str | None:
    """The optimizer steps; returns the name of the signal that stopped them early, or None."""
    cfg, policy = setup.config, setup.policy
    trained_seconds = 0.0  # for train.max_seconds
    for step in range(1, cfg.train.steps + 1):
        if stop.requested:  # (during the data building or the first evaluation: nothing trained to save)
            return stop.name
        t0 = time.perf_counter()
        metrics = sft_step(policy, optimizer, scheduler, next(data), setup.tokenizer.pad_token_id, cfg)
        extra = 0.0
        if step == 1:  # data building (teacher sampling + verification) is part of this run's training time
            built = data_timer.reset()
            metrics.update(built)
            extra = sum(v for k, v in built.items() if k.startswith("time/"))
        trained_seconds += time.perf_counter() - t0 + extra
        out_of_time = cfg.train.max_seconds is not None and trained_seconds >= cfg.train.max_seconds
        last = step == cfg.train.steps or out_of_time
        interrupted = stop.requested and not last  # keep this step's model, skip the evaluation
        if not interrupted and (last or (cfg.eval.every and step % cfg.eval.every == 0)):
            t_eval = time.perf_counter()
            metrics.update(_eval(setup, eval_problems, progress, "eval after SFT" if last else f"eval at step {step}"))
            metrics["time/evaluation"] = time.perf_counter() - t_eval
        if last or interrupted or (cfg.log.save_every and step % cfg.log.save_every == 0):
            t_ckpt = time.perf_counter()
            save_checkpoint(log.dir, step, policy, setup.tokenizer, optimizer, scheduler,
                            {"wall_seconds": time.perf_counter() - start}, keep_last=cfg.log.keep_last)
            metrics["time/checkpoint"] = time.perf_counter() - t_ckpt
        metrics["time/step"] = time.perf_counter() - t0 + extra
        metrics["wall_seconds"] = time.perf_counter() - start
        log.log(step, metrics)
        bar.set_postfix(loss=f"{metrics['loss']:.3f}")
        bar.update(1)
        if interrupted:
            return stop.name
        if out_of_time:
            break
    return None
