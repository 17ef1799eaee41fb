"""One RL step: sample -> score -> advantages -> filter -> [rebalance] -> micro-batches -> loss -> step -> sync.

The step's M prompts x G completions are sampled in engine calls of
``generation_batch_size`` completions, whole groups kept together. Each
round's micro-batches are backpropagated as soon as its groups are scored, so
with ``generation_batch_size == micro_batch_size`` this is the standard GRPO
schedule (one engine call per micro-batch). With K > 1 updates per batch the
samples are kept and replayed; the log-probs of the first pass are the "old"
log-probs of the PPO ratio, so no extra forward pass is needed for them.
Gradient filtering drops samples before any forward pass; micro-batches are a
fixed number of rows or, with ``micro_batch_tokens``, packed by token budget.
Weights reach the engine once per sampled batch, after its last update.
With N processes (``dashrl.train.distributed``) each samples its share of the
prompts, kept samples are rebalanced by tokens across processes after the
filter, and the normaliser's counts and the gradients are summed over processes
before the step; with one process those calls do nothing. With FSDP
(``dist.fsdp``) every process runs the same number of forward / backward
passes (zero-weight idle passes fill in) and the gradients are reduce-scattered
on the update's last pass.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from dataclasses import dataclass
import torch
from transformers import get_scheduler

from dashrl.algo.advantages import group_advantages
from dashrl.algo.filtering import keep_mask
from dashrl.algo.importance import mismatch_sums, truncated_is_weights
from dashrl.algo.losses import kl_penalty, loss_numerator, policy_gradient_loss, step_normalizer, token_logprobs
from dashrl.config import Config
from dashrl.rollout.engine import Completion, Engine, SamplingParams
from dashrl.rewards.weighted import reward_from_config
from dashrl.tasks.base import Problem, Task
from dashrl.tasks.prompts import prompt_formatter
from dashrl.timing import StageTimer
from dashrl.train.batch import MicroBatch, Sample, collate, pack_by_tokens, split_rows
from dashrl.rollout.factory import push_weights
from dashrl.train.distributed import (Dist, Rebalanced, full_state_dict, full_tensor, rebalance, set_gradient_sync,
                                      shard)
from dashrl.train.guards import NonFiniteGuard, TrainingDiverged, is_finite


@dataclass
class UpdateStats:
    """Sums over the micro-batches of one optimizer step."""

    rows: int = 0
    tokens: int = 0
    micro_batches: int = 0
    loss_numerator: float = 0.0
    clipped_tokens: float = 0.0
    kl_sum: float = 0.0
    mismatch_abs_sum: float = 0.0  # first pass only: trainer vs engine log-probs of the trained tokens
    mismatch_abs_max: float = 0.0
    mismatch_kl_sum: float = 0.0
    mismatch_tokens: float = 0.0


def generation_rounds(problems: list[Problem], group_size: int, generation_batch_size: int) -> list[list[tuple[list[Problem], int]]]:
    """Plan engine calls: a list of rounds, each a list of (prompts, n) calls that completes its groups.

    gen >= G: one call per round with gen // G prompts x G completions.
    gen < G:  G // gen calls of one prompt x gen completions make one group.
    """
    if generation_batch_size >= group_size:
        per_call = generation_batch_size // group_size
        return [[(problems[i : i + per_call], group_size)] for i in range(0, len(problems), per_call)]
    calls = group_size // generation_batch_size
    return [[([p], generation_batch_size)] * calls for p in problems]


class Trainer:
    def __init__(self, config: Config, policy, tokenizer, engine: Engine, task: Task, reference=None,
                 dist: Dist | None = None):
        self.cfg = config
        self.policy = policy
        self.tokenizer = tokenizer
        self.engine = engine
        self.task = task
        self.reference = reference
        self.format_prompt = prompt_formatter(config.task, tokenizer)  # Problem -> engine prompt
        self.device = next(policy.parameters()).device
        self.dist = dist or Dist(device=self.device)  # world size 1: the collectives below do nothing
        algo, train = config.algo, config.train
        self.generation_batch_size = train.generation_batch_size or algo.prompts_per_step * algo.group_size
        self.sampling = SamplingParams(
            temperature=config.sampling.temperature,
            top_p=config.sampling.top_p,
            top_k=config.sampling.top_k,
            max_new_tokens=config.sampling.max_new_tokens,
        )
        self.optimizer = torch.optim.AdamW(
            [p for p in policy.parameters() if p.requires_grad],  # with LoRA: the adapters only
            lr=train.lr, betas=train.adam_betas, weight_decay=train.weight_decay,
        )
        self.scheduler = get_scheduler(
            "constant_with_warmup" if train.lr_schedule == "constant" else train.lr_schedule,
            self.optimizer,
            num_warmup_steps=train.warmup_steps,
            num_training_steps=train.steps * algo.updates_per_batch,
        )
        self.reward = reward_from_config(config.task)
        self.records: list[dict] = []  # the last step's completions, as text (for samples.jsonl)
        self._terms: dict[str, list[float]] = {}  # the step's reward term values so far
        self.step = 0  # sampled batches done
        self.stream = task.train_stream(config.task.train_seed)
        self.guard = NonFiniteGuard()  # non-finite loss / gradient / weights (dashrl.train.guards)
        self._reward_errors = 0  # completions whose user reward raised, this step
        self._idle_passes = 0  # FSDP: zero-weight passes run to match the other processes', this step
        self._unsynced = False  # FSDP: gradients accumulated but not yet reduce-scattered

    # ------------------------------------------------------------------ step

    def next_problems(self) -> list[Problem]:
        return [next(self.stream) for _ in range(self.cfg.algo.prompts_per_step)]

    def skip_problems(self, steps: int) -> None:
        """Advance the prompt stream past ``steps`` sampled batches (for resume)."""
        for _ in range(steps * self.cfg.algo.prompts_per_step):
            next(self.stream)

    def train_step(self, problems: list[Problem]) -> dict:
        """Sample, score, filter and learn from one batch of M prompts; returns the step's metrics."""
        timer = StageTimer()
        scored: list[Sample] = []  # every completion, for metrics
        kept: list[Sample] = []  # those that pass the gradient filter, replayed when K > 1
        dropped = UpdateStats()  # what filtered samples add to the normaliser ("all")
        stats = UpdateStats()
        self._reward_errors = self._idle_passes = 0
        balance: list[Rebalanced] = []
        self.records, self._terms = [], {}
        mine = shard(problems, self.dist.rank, self.dist.world_size)  # this process's prompts, whole groups
        rounds = generation_rounds(mine, self.cfg.algo.group_size, self.generation_batch_size)
        for r, round_calls in enumerate(rounds):
            groups = self._sample(round_calls, timer)
            new = self._score(groups, timer)
            train_rows = self._filter(new, dropped)  # before any forward pass
            train_rows = self._rebalance(train_rows, balance, timer)  # even tokens over processes
            self._backprop(self._micro_batches(train_rows), True, stats, timer, last=r == len(rounds) - 1)
            scored += new
            kept += train_rows
        mismatch = _mismatch_metrics(self._pooled_mismatch(stats))
        updates = [self._optimizer_step(stats, dropped, timer)]
        for _ in range(1, self.cfg.algo.updates_per_batch):
            stats = UpdateStats()
            self._backprop(self._micro_batches(kept), False, stats, timer, last=True)
            updates.append(self._optimizer_step(stats, dropped, timer))
        if any(not u["optimizer/skipped"] for u in updates):  # unchanged weights need no sync
            # before the engine or a checkpoint sees them (FSDP: each process checks its shard, all hear of any)
            self.guard.check_weights(self.policy, self.step + 1, gather=self.dist.gather if self.dist.fsdp else None)
            if not getattr(self.engine, "shares_policy", False):  # a shared engine generates with the policy itself
                with timer.stage("weight_sync"):
                    gathered = full_state_dict(self.policy) if self.dist.fsdp else None  # FSDP: the whole weights
                    push_weights(self.engine, self.policy, gathered)  # LoRA merged in, or the adapter alone
        self.step += 1
        terms = {f"reward/{k}": sum(v) / len(v) for k, v in self._terms.items()} if self.cfg.task.rewards else {}
        idle = {"dist/idle_passes": self.dist.all_sum([self._idle_passes])[0]} if self.dist.fsdp else {}
        return {**self._sample_metrics(scored, kept), **terms, **_mean_dicts(updates), **mismatch,
                **_balance_metrics(balance), **idle, "reward/errors": self._reward_errors, **timer.reset()}

    def _filter(self, samples: list[Sample], dropped: UpdateStats) -> list[Sample]:
        """Gradient filtering: keep samples with |A| > tau; count the rest for the normaliser."""
        algo = self.cfg.algo
        mask = keep_mask(torch.tensor([s.advantage for s in samples]), algo.filter_tau).tolist()
        out = [s for s, keep in zip(samples, mask) if not keep]
        if algo.filter_normalize == "all":
            dropped.rows += len(out)
            dropped.tokens += sum(len(s.completion_ids) for s in out)
            all_out = int(self.dist.all_sum([len(out)])[0])  # micro-batches they would have filled, over processes
            if self.dist.is_main:
                dropped.micro_batches += math.ceil(all_out / self.cfg.train.micro_batch_size)
        return [s for s, keep in zip(samples, mask) if keep]

    def _rebalance(self, samples: list[Sample], balance: list[Rebalanced], timer: StageTimer) -> list[Sample]:
        """Several processes: move kept samples so that each trains on nearly the same number of tokens."""
        if not self.dist.enabled:
            return samples
        with timer.stage("rebalance"):
            result = rebalance(samples, self.dist, enabled=self.cfg.dist.rebalance)
        balance.append(result)
        return result.samples

    def _micro_batches(self, samples: list[Sample]) -> list[list[Sample]]:
        if self.cfg.train.micro_batch_tokens:
            return pack_by_tokens(samples, self.cfg.train.micro_batch_tokens)
        return split_rows(samples, self.cfg.train.micro_batch_size)

    # ------------------------------------------------------- sample + score

    def _sample(self, calls: list[tuple[list[Problem], int]], timer: StageTimer) -> list[tuple[Problem, list[Completion]]]:
        """Run one round of engine calls; returns complete groups (problem, G completions)."""
        groups: dict[int, tuple[Problem, list[Completion]]] = {}
        with timer.stage("generation"):
            for prompts, n in calls:
                texts = [self.format_prompt(p) for p in prompts]
                for problem, completions in zip(prompts, self.engine.generate(texts, n, self.sampling)):
                    groups.setdefault(id(problem), (problem, []))[1].extend(completions)
                    timer.add_tokens("generation", sum(len(c.token_ids) for c in completions))
        return list(groups.values())

    def _score(self, groups: list[tuple[Problem, list[Completion]]], timer: StageTimer) -> list[Sample]:
        """Rewards, then group advantages; one Sample per completion, groups contiguous."""
        with timer.stage("reward"):
            scored = self.reward.score(self.task, [c.text for _, cs in groups for c in cs],
                                       [p for p, cs in groups for _ in cs])
        flat = torch.tensor(scored.total)
        self._reward_errors += sum(r.reason == "reward_error" for r in scored.correctness)  # user rewards that raised
        advantages = group_advantages(flat, self.cfg.algo.group_size, self.cfg.algo.scale_rewards).tolist()
        for label, values in scored.terms.items():
            self._terms.setdefault(label, []).extend(values)
        samples = []
        for problem, completions in groups:
            prompt = self.format_prompt(problem)
            for completion in completions:
                i = len(samples)
                result = scored.correctness[i]
                engine_logp = torch.tensor(completion.logprobs) if completion.logprobs is not None else None
                samples.append(Sample(problem.id, completion.prompt_ids, completion.token_ids, scored.total[i],
                                      advantages[i], completion.finish_reason, engine_logp=engine_logp,
                                      correct=result.score >= 1))
                self.records.append({"id": problem.id, "prompt": prompt, "completion": completion.text,
                                     "reward": scored.total[i], **{f"reward/{k}": v[i] for k, v in scored.terms.items()},
                                     "advantage": advantages[i], "reason": result.reason,
                                     "extracted": result.extracted, "answer": problem.answer})
        return samples

    # ------------------------------------------------------ loss + backward

    def _logprobs(self, model, mb: MicroBatch) -> torch.Tensor:
        return completion_logprobs(model, mb, self.cfg.sampling.temperature)

    def _backprop(self, batches: list[list[Sample]], first_pass: bool, stats: UpdateStats, timer: StageTimer,
                  last: bool) -> None:
        """Forward + backward each micro-batch (``last``: they end the update's passes).

        With FSDP every process runs as many passes as the busiest one (its
        missing ones are idle passes), and gradients are reduce-scattered in
        the update's last pass only (FSDP's no_sync accumulation).
        """
        passes = self.dist.most(len(batches)) if self.dist.fsdp else len(batches)
        for i in range(passes):
            if self.dist.fsdp:
                sync = last and i == passes - 1
                set_gradient_sync(self.policy, sync)
                self._unsynced = not sync
            if i < len(batches):
                self._accumulate(batches[i], first_pass=first_pass, stats=stats, timer=timer)
            else:
                self._idle_pass(first_pass and self.cfg.algo.beta > 0, timer)

    def _idle_pass(self, reference: bool, timer: StageTimer) -> None:
        """FSDP: a zero-weight forward + backward of one pad token, so that this process joins the others' collectives."""
        pad = self.tokenizer.pad_token_id
        mb = collate([Sample("", (pad,), (pad,), 0.0, 0.0)], pad).to(self.device)
        with timer.stage("forward_backward"):
            if reference:  # the reference model is sharded too
                with torch.no_grad():
                    self._logprobs(self.reference, mb)
            (self._logprobs(self.policy, mb).sum() * 0.0).backward()
        self._idle_passes += 1

    def _accumulate(self, rows: list[Sample], first_pass: bool, stats: UpdateStats, timer: StageTimer) -> None:
        """Forward + backward one micro-batch, adding its gradient and stats to the step's."""
        algo = self.cfg.algo
        mb = collate(rows, self.tokenizer.pad_token_id).to(self.device)
        ref_logp = mb.ref_logp
        if algo.beta > 0 and ref_logp is None:
            with timer.stage("reference", tokens=sum(s.num_tokens for s in rows)), torch.no_grad():
                ref_logp = self._logprobs(self.reference, mb)
            _store(rows, "ref_logp", ref_logp)
        with timer.stage("forward_backward", tokens=sum(s.num_tokens for s in rows)):
            logp = self._logprobs(self.policy, mb)
            old_logp = logp.detach() if first_pass else mb.old_logp
            per_token, clipped = policy_gradient_loss(logp, old_logp, mb.advantages, algo.clip_eps_low, algo.clip_eps_high)
            rollout = self.cfg.rollout
            if rollout.is_correction != "none" and mb.engine_logp is not None:  # pi_old / pi_engine, truncated
                per_token = per_token * truncated_is_weights(old_logp, mb.engine_logp, mb.completion_mask,
                                                             rollout.is_cap, rollout.is_correction)
            if algo.beta > 0:
                kl = kl_penalty(logp, ref_logp, algo.kl_estimator)
                per_token = per_token + algo.beta * kl
                stats.kl_sum += (kl.detach() * mb.completion_mask).sum().item()
            numerator = loss_numerator(per_token, mb.completion_mask, algo.loss_agg)
            numerator.backward()
        if first_pass and algo.updates_per_batch > 1:
            _store(rows, "old_logp", logp.detach())
        if first_pass and mb.engine_logp is not None:
            gap = mismatch_sums(logp, mb.engine_logp, mb.completion_mask)
            stats.mismatch_abs_sum += gap["abs_sum"]
            stats.mismatch_abs_max = max(stats.mismatch_abs_max, gap["abs_max"])
            stats.mismatch_kl_sum += gap["kl_sum"]
            stats.mismatch_tokens += gap["tokens"]
        stats.rows += len(rows)
        stats.tokens += int(mb.completion_mask.sum().item())
        stats.micro_batches += 1
        stats.loss_numerator += numerator.item()
        stats.clipped_tokens += (clipped.float() * mb.completion_mask).sum().item()

    def _optimizer_step(self, stats: UpdateStats, dropped: UpdateStats, timer: StageTimer) -> dict:
        """Divide the summed gradient by the aggregation's normaliser, clip, step.

        A step where every sample was filtered has no gradient: the optimizer
        step is skipped (and logged); the lr schedule still advances.
        """
        lr = self.scheduler.get_last_lr()[0]
        if self._unsynced:  # FSDP: the update's last round had no pass to reduce-scatter the gradients in
            set_gradient_sync(self.policy, True)
            self._idle_pass(False, timer)
            self._unsynced = False
        stats, dropped = self._summed_over_processes(stats, dropped)
        if stats.rows == 0:
            self._advance_schedule_only()
            return {"loss": 0.0, "grad_norm": 0.0, "lr": lr, "clip_frac": 0.0, "kl": 0.0, "optimizer/skipped": 1.0,
                    "optimizer/nonfinite": 0.0}
        norm = step_normalizer(self.cfg.algo.loss_agg, stats.rows + dropped.rows, stats.tokens + dropped.tokens,
                               stats.micro_batches + dropped.micro_batches, self.cfg.sampling.max_new_tokens)
        with timer.stage("optimizer"):
            if not self.dist.fsdp:  # (FSDP reduce-scattered them as a sum in the last backward pass)
                self.dist.all_reduce_grads(self.policy.parameters())  # sum over processes (nothing with one)
            for p in self.policy.parameters():
                if p.grad is not None:
                    p.grad.div_(norm)
            grad_norm = full_tensor(torch.nn.utils.clip_grad_norm_(self.policy.parameters(), self.cfg.train.max_grad_norm))
            finite = is_finite(grad_norm) and is_finite(stats.loss_numerator)
            self.guard.record(finite, self.step + 1)
            if not finite:  # skip it: drop the gradients, keep the weights (the schedule still advances)
                self.optimizer.zero_grad(set_to_none=True)
                self._advance_schedule_only()
                return {"loss": 0.0, "grad_norm": 0.0, "lr": lr, "clip_frac": 0.0, "kl": 0.0,
                        "optimizer/skipped": 1.0, "optimizer/nonfinite": 1.0}
            try:
                self.optimizer.step()
            except RuntimeError as exc:  # AdamW's step size overflowing float32 (a huge lr)
                if "overflow" not in str(exc):
                    raise
                raise TrainingDiverged(f"training diverged: the optimizer step overflowed at step {self.step + 1} "
                                       f"(lr {lr:g}); lower train.lr") from None
            self.scheduler.step()
            self.optimizer.zero_grad(set_to_none=True)
        tokens = max(stats.tokens, 1)
        return {"loss": stats.loss_numerator / norm, "grad_norm": float(grad_norm), "lr": lr,
                "clip_frac": stats.clipped_tokens / tokens, "kl": stats.kl_sum / tokens, "optimizer/skipped": 0.0,
                "optimizer/nonfinite": 0.0}

    def _advance_schedule_only(self) -> None:
        """A skipped optimizer step still moves the lr schedule on (torch warns about that order; it is intended)."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            self.scheduler.step()

    def _summed_over_processes(self, *parts: UpdateStats) -> list[UpdateStats]:
        """The step's statistics summed over processes (unchanged with one)."""
        if not self.dist.enabled:
            return list(parts)
        names = list(vars(UpdateStats()))
        totals = iter(self.dist.all_sum([getattr(p, n) for p in parts for n in names]))
        return [UpdateStats(*(type(getattr(p, n))(next(totals)) for n in names)) for p in parts]

    def _pooled_mismatch(self, stats: UpdateStats) -> UpdateStats:
        """The first pass's trainer / engine log-prob gap over every process's trained tokens."""
        if not self.dist.enabled:
            return stats
        summed = self._summed_over_processes(stats)[0]  # (a max does not add up: gathered instead)
        return dataclasses.replace(summed, mismatch_abs_max=max(self.dist.gather(stats.mismatch_abs_max)))

    # -------------------------------------------------------------- metrics

    def _sample_metrics(self, samples: list[Sample], kept: list[Sample]) -> dict:
        G = self.cfg.algo.group_size
        kept_rows, kept_tokens = (int(v) for v in self.dist.all_sum([len(kept), sum(s.num_tokens for s in kept)]))
        samples = _gathered_for_metrics(samples, self.dist)  # every process's, groups contiguous
        rewards = torch.tensor([s.reward for s in samples]).view(-1, G)
        correct = torch.tensor([s.correct for s in samples]).view(-1, G)
        lengths = torch.tensor([len(s.completion_ids) for s in samples], dtype=torch.float)
        return {
            "reward/mean": rewards.mean().item(),
            "reward/accuracy": correct.float().mean().item(),
            "groups/all_correct": correct.all(dim=1).float().mean().item(),
            "groups/all_wrong": (~correct).all(dim=1).float().mean().item(),
            "completion/mean_length": lengths.mean().item(),
            "completion/truncated": sum(s.finish_reason == "length" for s in samples) / len(samples),
            "filter/dropped_frac": 1 - kept_rows / len(samples),
            "tokens/generated": int(lengths.sum().item()),
            "tokens/trained": kept_tokens * self.cfg.algo.updates_per_batch,
        }


def completion_logprobs(model, mb: MicroBatch, temperature: float) -> torch.Tensor:
    """(B, C) log-probs of a micro-batch's completion tokens under ``model`` (logits of completions only)."""
    out = model(input_ids=mb.input_ids, attention_mask=mb.attention_mask, position_ids=mb.position_ids,
                logits_to_keep=mb.completion_len + 1, use_cache=False)
    return token_logprobs(out.logits[:, :-1], mb.completion_ids, temperature)


def _mismatch_metrics(stats: UpdateStats) -> dict:
    """Per-step trainer/engine gap over the trained tokens (filtered samples get no trainer pass); {} if unknown."""
    if not stats.mismatch_tokens:
        return {}
    return {"mismatch/abs_mean": stats.mismatch_abs_sum / stats.mismatch_tokens,
            "mismatch/abs_max": stats.mismatch_abs_max, "mismatch/kl": stats.mismatch_kl_sum / stats.mismatch_tokens}


def _store(rows: list[Sample], attr: str, values: torch.Tensor) -> None:
    """Keep per-sample log-probs (unpadded, on CPU) for later updates."""
    values = values.detach().float().cpu()
    for i, sample in enumerate(rows):
        setattr(sample, attr, values[i, : len(sample.completion_ids)].clone())


def _gathered_for_metrics(samples: list[Sample], dist: Dist) -> list[Sample]:
    """Every process's samples (reward, correctness, length, finish reason only) in rank order; one process: ``samples``."""
    if not dist.enabled:
        return samples
    light = [(s.reward, s.correct, len(s.completion_ids), s.finish_reason) for s in samples]
    return [Sample("", (), (0,) * n, r, 0.0, f, correct=c) for r, c, n, f in dist.gather_list(light)]


def _balance_metrics(balance: list[Rebalanced]) -> dict:
    """Token imbalance (max / mean over processes) before and after rebalancing, and what moved."""
    if not balance:
        return {}
    return {"dist/imbalance_before": sum(b.imbalance_before for b in balance) / len(balance),
            "dist/imbalance_after": sum(b.imbalance_after for b in balance) / len(balance),
            "dist/moved_samples": sum(b.moved for b in balance)}


def _mean_dicts(dicts: list[dict]) -> dict:
    return {k: sum(d[k] for d in dicts) / len(dicts) for k in dicts[0]}

