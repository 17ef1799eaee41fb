"""Held-out evaluation: greedy pass@1, sampled pass@1 and pass@k, completion length.

Problems are sent to the engine ``batch_size`` prompts at a time. Sampling
runs under its own seeded RNG, forked from the caller's: results are
reproducible, and evaluating during training never changes the training run.
Returns the metrics and, per completion, a record: the prompt exactly as sent
(template and chat template applied), the completion, the answer the verifier
extracted, the reference answer, score and reason, and the raw problem text.
In a multi-process run each process evaluates its share of the problems and
``gather`` (concatenate every process's list, in rank order) joins the counts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch

from dashrl.config import EvalConfig
from dashrl.eval.passk import mean_pass_at_k
from dashrl.progress import progress_bar
from dashrl.rollout.engine import Engine, SamplingParams
from dashrl.tasks.base import Problem, Task, score_all
from dashrl.tasks.prompts import PromptFormatter, raw_prompt


@dataclass
class EvalResult:
    metrics: dict[str, float]
    records: list[dict] = field(default_factory=list)  # one per completion (see the module docstring)


def _run(engine: Engine, task: Task, problems: list[Problem], n: int, sampling: SamplingParams, batch_size: int,
         format_prompt: PromptFormatter = raw_prompt, bar=None):
    """Yield (problem, prompt as sent, [(completion, RewardResult), ...]) for every problem."""
    per_call = max(1, batch_size // n)
    for start in range(0, len(problems), per_call):
        chunk = problems[start : start + per_call]
        prompts = [format_prompt(p) for p in chunk]
        groups = engine.generate(prompts, n, sampling)
        results = score_all(task, [c.text for g in groups for c in g], [p for p in chunk for _ in range(n)])
        if bar is not None:
            bar.update(len(chunk) * n)
        for i, (problem, group) in enumerate(zip(chunk, groups)):
            yield problem, prompts[i], list(zip(group, results[i * n : (i + 1) * n]))


def evaluate(engine: Engine, task: Task, problems: list[Problem], cfg: EvalConfig, max_new_tokens: int,
             seed: int = 0, format_prompt: PromptFormatter = raw_prompt,
             gather: Callable[[list], list] | None = None, progress: bool = False, desc: str = "eval") -> EvalResult:
    """Evaluate; ``format_prompt`` turns a Problem into the engine's prompt (as in training).

    ``gather``: several processes, each passing its share of the problems (see the module docstring).
    ``progress``: a bar over this process's completions (greedy, then sampled).
    """
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        total = len(problems) * (1 + cfg.samples)
        with progress_bar(total, desc, progress, unit="completion", leave=False) as bar:
            return _evaluate(engine, task, problems, cfg, max_new_tokens, format_prompt, gather or (lambda items: items),
                             bar)


def _evaluate(engine: Engine, task: Task, problems: list[Problem], cfg: EvalConfig, max_new_tokens: int,
              format_prompt: PromptFormatter, gather: Callable[[list], list], bar) -> EvalResult:
    metrics: dict[str, float] = {}
    records: list[dict] = []

    def run(mode: str, n: int, sampling: SamplingParams) -> list[tuple[int, int]]:
        counts, lengths, mode_records = [], [], []
        for problem, prompt, scored in _run(engine, task, problems, n, sampling, cfg.batch_size, format_prompt, bar):
            correct = sum(r.score >= 1.0 for _, r in scored)
            counts.append((n, correct))
            for completion, result in scored:
                lengths.append(len(completion.token_ids))
                mode_records.append({"id": problem.id, "mode": mode, "prompt": prompt, "completion": completion.text,
                                     "extracted": result.extracted, "answer": problem.answer, "score": result.score,
                                     "reason": result.reason, "problem": problem.prompt})
        counts, lengths = gather(counts), gather(lengths)
        records.extend(gather(mode_records))
        metrics[f"{mode}/mean_length"] = sum(lengths) / max(len(lengths), 1)
        return counts

    greedy = run("greedy", 1, SamplingParams(max_new_tokens=max_new_tokens, greedy=True))
    metrics["greedy/pass@1"] = mean_pass_at_k(greedy, 1)
    if cfg.samples:
        sampled = run("sampled", cfg.samples, SamplingParams(temperature=cfg.temperature, max_new_tokens=max_new_tokens))
        for k in sorted(set(cfg.ks) | {1}):
            metrics[f"sampled/pass@{k}"] = mean_pass_at_k(sampled, k)
    return EvalResult(metrics=metrics, records=records)
