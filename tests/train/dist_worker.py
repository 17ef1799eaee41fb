"""One process of the 2-process gloo tests (tests/train/test_distributed.py); also run in-process with world size 1.

``python dist_worker.py MODEL_DIR OUT_DIR`` under RANK / WORLD_SIZE / MASTER_* runs
every gradient case of ``CASES`` through ``Trainer.train_step`` on a fixed set of
hand-made samples (sampling and scoring replaced), with SGD so that the weight
change is -lr x the step's gradient, and saves the weight changes per case. It
also exchanges samples that carry old / reference log-probs and saves what
arrived.
"""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import torch

from dashrl.config import load_config
from dashrl.tasks.base import Problem
from dashrl.train.batch import Sample
from dashrl.train.distributed import full_tensor, rebalance
from dashrl.train.run import prepare

# (loss_agg, filter_tau, filter_normalize, K, skewed): skewed samples make rebalancing move samples,
# which changes the micro-batches, so bnpo (a mean of micro-batch means) is only compared without it
CASES = [(agg, tau, norm, k, False) for agg in ("grpo", "bnpo", "dr_grpo", "dapo")
         for tau, norm in ((None, "all"), (0.0, "all"), (0.0, "kept")) for k in (1, 2)]
CASES += [(agg, 0.0, "all", k, True) for agg in ("grpo", "dr_grpo", "dapo") for k in (1, 2)]
# The same comparison with the policy and reference sharded by FSDP2 (dist.fsdp=true on 2 processes;
# ignored by the 1-process run): (..., extra overrides). With micro-batches of 1 and no rebalancing
# rank 0 trains 2 micro-batches and rank 1 four, so rank 0 runs 2 idle passes; with engine calls of one
# group each process's last round is all filtered, so the gradients wait for a flush pass.
FSDP_CASES = [(agg, 0.0, "all", 2, False, ()) for agg in ("grpo", "bnpo", "dr_grpo", "dapo")]
FSDP_CASES += [("dapo", 0.0, "all", 1, True, ("dist.rebalance=false", "train.micro_batch_size=1")),
               ("grpo", 0.0, "kept", 1, False, ("train.generation_batch_size=2", "algo.beta=0.1"))]
G = 2


def problems() -> list[Problem]:
    return [Problem(f"p{i}", f"q{i}", "0") for i in range(4)]


def samples_for(skewed: bool) -> dict[str, list[Sample]]:
    """Groups p0, p1 land on rank 0 and p2, p3 on rank 1. p1 and p3 have equal rewards (filtered out at tau = 0).

    Even: rank 0 and rank 1 keep the same token counts, so nothing moves. Skewed:
    rank 0 keeps 23 + 5 tokens, rank 1 5 + 5 + 5 + 3: one sample moves.
    """
    long = tuple(range(30, 50)) if skewed else (30, 31)
    return {
        "p0": [Sample("p0", (10, 11, 12), long, 1.0, 1.0), Sample("p0", (10, 11, 12), (22, 1), 0.0, -1.0)],
        "p1": [Sample("p1", (13, 14), (23, 24, 25), 1.0, 0.0), Sample("p1", (13, 14), (26,), 1.0, 0.0)],
        "p2": [Sample("p2", (15, 16, 17), (27, 28), 1.0, 0.7), Sample("p2", (15, 16, 17), (29, 1), 0.0, -0.7)],
        "p3": ([Sample("p3", (18, 19), (41, 42, 43), 1.0, 0.5), Sample("p3", (18, 19), (44,), 0.0, -0.5)] if skewed
               else [Sample("p3", (18, 19), (41, 42, 43), 0.0, 0.0), Sample("p3", (18, 19), (44,), 0.0, 0.0)]),
    }


def run_case(model_dir: str, run_dir: str, case, fsdp: bool = False) -> tuple[list[torch.Tensor], dict]:
    agg, tau, norm, k, skewed, *rest = case
    extra = [*(rest[0] if rest else ()), *(["dist.fsdp=true"] if fsdp else [])]
    cfg = load_config(overrides=[
        f"model.path={model_dir}", f"log.run_dir={run_dir}", f"algo.group_size={G}", "algo.prompts_per_step=4",
        "train.micro_batch_size=2", "sampling.max_new_tokens=16", f"algo.loss_agg={agg}",
        f"algo.filter_tau={'null' if tau is None else tau}", f"algo.filter_normalize={norm}",
        f"algo.updates_per_batch={k}", "algo.clip_eps_low=0.2", "train.max_grad_norm=1e9", "dist.timeout_s=60",
        *extra])
    trainer = prepare(cfg, progress=False).trainer
    trainer.optimizer = torch.optim.SGD(trainer.policy.parameters(), lr=0.5)  # change = -0.5 x gradient
    trainer.scheduler = torch.optim.lr_scheduler.LambdaLR(trainer.optimizer, lambda step: 1.0)
    fixed = samples_for(skewed)
    trainer._sample = lambda calls, timer: [(p, []) for prompts, _ in calls for p in prompts]
    trainer._score = lambda groups, timer: [with_engine_logp(copy.deepcopy(s)) for p, _ in groups for s in fixed[p.id]]
    before = [full_tensor(p.detach()).clone() for p in trainer.policy.parameters()]  # FSDP: gathered whole
    metrics = trainer.train_step(problems())
    return [full_tensor(p.detach()) - b for p, b in zip(trainer.policy.parameters(), before)], metrics


def with_engine_logp(sample: Sample) -> Sample:
    """The engine's sampling log-probs, made up and distinct per token, so the mismatch metrics have a gap to pool."""
    sample.engine_logp = -0.1 * torch.arange(1, len(sample.completion_ids) + 1, dtype=torch.float) - sample.advantage
    return sample


def gathered_samples(dist) -> list[str]:
    """samples.jsonl's groups when each process sampled one group (G rows) of its own."""
    from dashrl.train.samples import step_samples

    mine = [{"id": f"rank{dist.rank}"} for _ in range(G)]
    return [row["id"] for row in step_samples(mine, G, dist.gather_list)]


def exchange(dist) -> list[tuple[str, int, bool, bool]]:
    """Rank 0 holds four samples with log-probs, rank 1 none: what each rank has after rebalancing."""
    mine = []
    if dist.rank == 0:
        for i in range(4):
            s = Sample(f"x{i}", (1, 2), (3, 4, 5), 1.0, 1.0)
            s.old_logp, s.ref_logp = torch.full((3,), -float(i)), torch.full((3,), -10.0 - i)
            mine.append(s)
    result = rebalance(mine, dist)
    return [(s.problem_id, s.num_tokens, bool(torch.equal(s.old_logp, torch.full((3,), -float(int(s.problem_id[1]))))),
             s.ref_logp is not None) for s in result.samples]


def sum_grads(dist) -> list[torch.Tensor]:
    """Gradients rank + 1 (float32 and bfloat16, one missing), summed in buckets of 3 elements."""
    params = [torch.nn.Parameter(torch.zeros(4)), torch.nn.Parameter(torch.zeros(2, dtype=torch.bfloat16)),
              torch.nn.Parameter(torch.zeros(3)), torch.nn.Parameter(torch.zeros(1), requires_grad=False)]
    for p in params[:2]:
        p.grad = torch.full_like(p, dist.rank + 1.0)
    params[2].grad = None if dist.rank == 0 else torch.ones(3)
    dist.all_reduce_grads(params, bucket_elements=3)
    return [p.grad for p in params[:3]]


def main(model_dir: str, out_dir: str) -> None:
    out = Path(out_dir)
    results = {}
    for case in CASES:
        results[case], results[(case, "metrics")] = run_case(model_dir, str(out / "run"), case)
    for case in FSDP_CASES:
        results[("fsdp", case)], results[("fsdp", case, "metrics")] = run_case(model_dir, str(out / "run"), case,
                                                                             fsdp=True)
    dist = prepare(load_config(overrides=[f"model.path={model_dir}", f"log.run_dir={out / 'run'}"]),
                   progress=False).trainer.dist
    results["exchange"] = exchange(dist)
    results["grads"] = sum_grads(dist)
    results["samples"] = gathered_samples(dist)
    torch.save(results, out / f"rank{dist.rank}.pt")
    dist.close()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
