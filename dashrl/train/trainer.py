"""One RL step: sample -> score -> advantages -> filter -> micro-batches -> loss -> step -> sync.

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
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
import torch
from transformers import get_scheduler

from dashrl.algo.advantages import group_advantages
from dashrl.algo.filtering import keep_mask
from dashrl.algo.losses import kl_penalty, loss_numerator, policy_gradient_loss, step_normalizer, token_logprobs
from dashrl.config import Config
from dashrl.rollout.engine import Completion, Engine, SamplingParams
from dashrl.tasks.base import Problem, Task, score_all
from dashrl.tasks.prompts import prompt_formatter
from dashrl.timing import StageTimer
from dashrl.train.batch import MicroBatch, Sample, collate, pack_by_tokens, split_rows
from dashrl.train.guards import NonFiniteGuard, is_finite
from dashrl.models.lora import plain_state_dict


@dataclass
class UpdateStats:
    """Sums over the micro-batches of one optimizer step."""

    rows: int = 0
    tokens: int = 0
    micro_batches: int = 0
    loss_numerator: float = 0.0
    clipped_tokens: float = 0.0
    kl_sum: float = 0.0


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
    def __init__(self, config: Config, policy, tokenizer, engine: Engine, task: Task, reference=None):
        self.cfg = config
        self.policy = policy
        self.tokenizer = tokenizer
        self.engine = engine
        self.task = task
        self.reference = reference
        self.format_prompt = prompt_formatter(config.task, tokenizer)  # Problem -> engine prompt
        self.device = next(policy.parameters()).device
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
        self.step = 0  # sampled batches done
        self.stream = task.train_stream(config.task.train_seed)
        self.guard = NonFiniteGuard()  # non-finite loss / gradient / weights (dashrl.train.guards)
        self._reward_errors = 0  # completions whose user reward raised, this step

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
        self._reward_errors = 0
        for round_calls in generation_rounds(problems, self.cfg.algo.group_size, self.generation_batch_size):
            groups = self._sample(round_calls, timer)
            new = self._score(groups, timer)
            train_rows = self._filter(new, dropped)  # before any forward pass
            for rows in self._micro_batches(train_rows):
                self._accumulate(rows, first_pass=True, stats=stats, timer=timer)
            scored += new
            kept += train_rows
        updates = [self._optimizer_step(stats, dropped, timer)]
        for _ in range(1, self.cfg.algo.updates_per_batch):
            stats = UpdateStats()
            for rows in self._micro_batches(kept):
                self._accumulate(rows, first_pass=False, stats=stats, timer=timer)
            updates.append(self._optimizer_step(stats, dropped, timer))
        if any(not u["optimizer/skipped"] for u in updates):  # unchanged weights need no sync
            self.guard.check_weights(self.policy, self.step + 1)  # before the engine or a checkpoint sees them
            with timer.stage("weight_sync"):
                self.engine.load_weights(plain_state_dict(self.policy))  # LoRA merged in
        self.step += 1
        return {**self._sample_metrics(scored, kept), **_mean_dicts(updates), "reward/errors": self._reward_errors,
                **timer.reset()}

    def _filter(self, samples: list[Sample], dropped: UpdateStats) -> list[Sample]:
        """Gradient filtering: keep samples with |A| > tau; count the rest for the normaliser."""
        algo = self.cfg.algo
        mask = keep_mask(torch.tensor([s.advantage for s in samples]), algo.filter_tau).tolist()
        out = [s for s, keep in zip(samples, mask) if not keep]
        if out and algo.filter_normalize == "all":
            dropped.rows += len(out)
            dropped.tokens += sum(len(s.completion_ids) for s in out)
            dropped.micro_batches += math.ceil(len(out) / self.cfg.train.micro_batch_size)
        return [s for s, keep in zip(samples, mask) if keep]

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
            flat_results = score_all(self.task, [c.text for _, cs in groups for c in cs],
                                     [p for p, cs in groups for _ in cs])
        self._reward_errors += sum(r.reason == "reward_error" for r in flat_results)  # user rewards that raised
        G = self.cfg.algo.group_size
        rewards = [[r.score for r in flat_results[i : i + G]] for i in range(0, len(flat_results), G)]
        flat = torch.tensor([r for group in rewards for r in group])
        advantages = group_advantages(flat, self.cfg.algo.group_size, self.cfg.algo.scale_rewards).tolist()
        samples = []
        for (problem, completions), group_rewards in zip(groups, rewards):
            for completion, reward in zip(completions, group_rewards):
                samples.append(Sample(problem.id, completion.prompt_ids, completion.token_ids, reward,
                                      advantages[len(samples)], completion.finish_reason))
        return samples

    # ------------------------------------------------------ loss + backward

    def _logprobs(self, model, mb: MicroBatch) -> torch.Tensor:
        return completion_logprobs(model, mb, self.cfg.sampling.temperature)

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
            if algo.beta > 0:
                kl = kl_penalty(logp, ref_logp, algo.kl_estimator)
                per_token = per_token + algo.beta * kl
                stats.kl_sum += (kl.detach() * mb.completion_mask).sum().item()
            numerator = loss_numerator(per_token, mb.completion_mask, algo.loss_agg)
            numerator.backward()
        if first_pass and algo.updates_per_batch > 1:
            _store(rows, "old_logp", logp.detach())
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
        if stats.rows == 0:
            with warnings.catch_warnings():  # stepping the schedule alone is intended here
                warnings.simplefilter("ignore", UserWarning)
                self.scheduler.step()
            return {"loss": 0.0, "grad_norm": 0.0, "lr": lr, "clip_frac": 0.0, "kl": 0.0, "optimizer/skipped": 1.0,
                    "optimizer/nonfinite": 0.0}
        norm = step_normalizer(self.cfg.algo.loss_agg, stats.rows + dropped.rows, stats.tokens + dropped.tokens,
                               stats.micro_batches + dropped.micro_batches, self.cfg.sampling.max_new_tokens)
        with timer.stage("optimizer"):
            for p in self.policy.parameters():
                if p.grad is not None:
                    p.grad.div_(norm)
            grad_norm = torch.nn.utils.clip_grad_norm_(self.policy.parameters(), self.cfg.train.max_grad_norm)
            finite = is_finite(grad_norm) and is_finite(stats.loss_numerator)
            self.guard.record(finite, self.step + 1)
            if not finite:  # skip it: drop the gradients, keep the weights (the schedule still advances)
                self.optimizer.zero_grad(set_to_none=True)
                self.scheduler.step()
                return {"loss": 0.0, "grad_norm": 0.0, "lr": lr, "clip_frac": 0.0, "kl": 0.0,
                        "optimizer/skipped": 1.0, "optimizer/nonfinite": 1.0}
            self.optimizer.step()
            self.scheduler.step()
            self.optimizer.zero_grad(set_to_none=True)
        tokens = max(stats.tokens, 1)
        return {"loss": stats.loss_numerator / norm, "grad_norm": float(grad_norm), "lr": lr,
                "clip_frac": stats.clipped_tokens / tokens, "kl": stats.kl_sum / tokens, "optimizer/skipped": 0.0,
                "optimizer/nonfinite": 0.0}

    # -------------------------------------------------------------- metrics

    def _sample_metrics(self, samples: list[Sample], kept: list[Sample]) -> dict:
        G = self.cfg.algo.group_size
        rewards = torch.tensor([s.reward for s in samples]).view(-1, G)
        lengths = torch.tensor([len(s.completion_ids) for s in samples], dtype=torch.float)
        return {
            "reward/mean": rewards.mean().item(),
            "reward/accuracy": (rewards >= 1).float().mean().item(),
            "groups/all_correct": (rewards >= 1).all(dim=1).float().mean().item(),
            "groups/all_wrong": (rewards <= 0).all(dim=1).float().mean().item(),
            "completion/mean_length": lengths.mean().item(),
            "completion/truncated": sum(s.finish_reason == "length" for s in samples) / len(samples),
            "filter/dropped_frac": 1 - len(kept) / len(samples),
            "tokens/generated": int(lengths.sum().item()),
            "tokens/trained": sum(s.num_tokens for s in kept) * self.cfg.algo.updates_per_batch,
        }


def completion_logprobs(model, mb: MicroBatch, temperature: float) -> torch.Tensor:
    """(B, C) log-probs of a micro-batch's completion tokens under ``model`` (logits of completions only)."""
    out = model(input_ids=mb.input_ids, attention_mask=mb.attention_mask, position_ids=mb.position_ids,
                logits_to_keep=mb.completion_len + 1, use_cache=False)
    return token_logprobs(out.logits[:, :-1], mb.completion_ids, temperature)


def _store(rows: list[Sample], attr: str, values: torch.Tensor) -> None:
    """Keep per-sample log-probs (unpadded, on CPU) for later updates."""
    values = values.detach().float().cpu()
    for i, sample in enumerate(rows):
        setattr(sample, attr, values[i, : len(sample.completion_ids)].clone())


def _mean_dicts(dicts: list[dict]) -> dict:
    return {k: sum(d[k] for d in dicts) / len(dicts) for k in dicts[0]}

