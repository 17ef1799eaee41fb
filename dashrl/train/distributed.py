"""Data-parallel RL over torch.distributed: every piece of multi-process logic lives here.

Launch with ``dashrl train --nproc N CONFIG`` (one node; this re-runs the command
under torch's elastic launcher) or with ``torchrun --nproc-per-node N -m dashrl
train CONFIG`` (any number of nodes). Backend: gloo on CPU, NCCL on GPU; every
collective has the ``dist.timeout_s`` timeout, so a dead or stuck process ends
the job instead of hanging it. With one process (no torchrun environment) a
``Dist`` of world size 1 makes every helper here a no-op, so the trainer has
one code path and a single-process run is exactly what it was before.

What each process does in one step:

1. takes its contiguous share of the step's M prompts (same seeded stream on
   every rank, so the assignment follows from seed and world size), samples
   its G completions per prompt with its own engine: groups stay whole on one
   rank, so advantages are computed where the group is;
2. filters (DASH), then ``rebalance``: the kept samples' token counts are
   all-gathered, ``plan_rebalance`` (a pure function) decides which samples
   move so that every rank trains on nearly the same number of tokens, and
   the moved samples (with any recorded old / reference log-probs) are sent;
3. backpropagates its micro-batches with no communication, then one
   all-reduce (sum) of the gradients per optimizer step (``all_reduce_grads``)
   and of the normaliser's rows / tokens / micro-batches (``all_sum``): the
   step's gradient is sum over ranks / global normaliser, which is exactly the
   one-process gradient on the same samples and micro-batches for every
   ``loss_agg`` mode. (DDP would average, i.e. divide by the world size as well,
   and requires every rank to run the same number of synchronised backward
   passes, which filtering breaks: a rank may keep nothing. Summing once at the
   step is DDP's ``no_sync`` accumulation followed by its one all-reduce.)

Rank 0 writes metrics, summary and checkpoints; the checkpoint holds every
rank's RNG state and the world size, and a resume with another world size is
refused. Evaluation is sharded over ranks and gathered. Moved samples travel
through an all-gather of pickled objects (each rank receives every moved
sample and keeps its own), which is cheap next to a forward pass.

By default every rank holds the whole model. With ``dist.fsdp=true``
(``shard_model``) the policy and reference are sharded with FSDP2
``fully_shard``: each rank keeps 1/N of the weights, gradients and AdamW
state, and every forward / backward all-gathers the weights it needs. Three
things follow, all handled here and in the trainer:

- every rank must run the same number of forward and backward passes, so a
  rank with fewer micro-batches after filtering runs zero-weight "idle"
  passes on a one-token row (``Dist.most``);
- gradients are reduce-scattered as a sum (divide factor 1, the global
  normaliser is applied after), and only on the update's last backward pass
  (``set_gradient_sync``, FSDP's ``no_sync``: unsharded gradients accumulate
  until then, trading gradient memory for less communication);
- the engine samples from its own full copy, refreshed at each weight sync
  with the gathered weights (``full_state_dict``); checkpoints hold the
  gathered model (a plain Hugging Face directory) and the gathered optimizer
  state, keyed by parameter name (``full_optimizer_state``).
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import uuid
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Sequence

import torch
import torch.distributed as tdist

from dashrl.errors import UserError
from dashrl.models.device import resolve_device, threads_per_process

# Environment variables torchrun sets in every worker
_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE")


@dataclass
class Dist:
    """This process's place in the job; world size 1 = no torch.distributed at all."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    fsdp: bool = False  # the policy is sharded with FSDP2 (``shard_model``)

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    # -------------------------------------------------------------- collectives

    def _comm_device(self) -> torch.device:
        return self.device if tdist.get_backend() == "nccl" else torch.device("cpu")

    def all_sum(self, values: Sequence[float]) -> list[float]:
        """Element-wise sum over ranks (float64: integer counts stay exact)."""
        if not self.enabled:
            return list(values)
        t = torch.tensor(list(values), dtype=torch.float64, device=self._comm_device())
        tdist.all_reduce(t)
        return t.tolist()

    def most(self, value: int) -> int:
        """The largest ``value`` over ranks."""
        if not self.enabled:
            return value
        t = torch.tensor([value], dtype=torch.int64, device=self._comm_device())
        tdist.all_reduce(t, op=tdist.ReduceOp.MAX)
        return int(t.item())

    def gather(self, obj: Any) -> list[Any]:
        """Every rank's ``obj``, in rank order, on every rank."""
        if not self.enabled:
            return [obj]
        out: list[Any] = [None] * self.world_size
        tdist.all_gather_object(out, obj)
        return out

    def gather_list(self, items: list) -> list:
        """The ranks' lists concatenated in rank order."""
        return [x for part in self.gather(items) for x in part]

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank."""
        if not self.enabled:
            return obj
        box = [obj]
        tdist.broadcast_object_list(box, src=0)
        return box[0]

    def barrier(self) -> None:
        if self.enabled:
            tdist.barrier()

    def all_reduce_grads(self, parameters, bucket_elements: int = 1 << 26) -> None:
        """Sum the trainable parameters' gradients over ranks, in flat buckets (missing grads count as zeros)."""
        if not self.enabled:
            return
        params = [p for p in parameters if p.requires_grad]
        for p in params:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        bucket: list[torch.Tensor] = []
        size = 0
        for i, p in enumerate(params):
            bucket.append(p.grad)
            size += p.grad.numel()
            if size >= bucket_elements or i == len(params) - 1:
                for dtype in sorted({g.dtype for g in bucket}, key=str):  # the same order on every rank
                    grads = [g for g in bucket if g.dtype == dtype]
                    flat = torch.cat([g.reshape(-1) for g in grads])
                    tdist.all_reduce(flat)
                    offset = 0
                    for g in grads:
                        g.copy_(flat[offset : offset + g.numel()].view_as(g))
                        offset += g.numel()
                bucket, size = [], 0

    def close(self) -> None:
        if self.enabled and tdist.is_initialized():
            tdist.destroy_process_group()


# ------------------------------------------------------------------- FSDP2


def shard_model(model: torch.nn.Module, dist: Dist) -> torch.nn.Module:
    """Shard ``model`` over the ranks with FSDP2: each decoder layer, then the rest; gradients reduced as a sum.

    The unit of sharding is each module the model names in ``_no_split_modules``
    (its transformer blocks); embeddings, final norm and head form the root unit.
    """
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import FSDPModule, fully_shard

    mesh = init_device_mesh(dist.device.type, (dist.world_size,))
    blocks = set(getattr(model, "_no_split_modules", None) or ())
    for module in list(model.modules()):
        if module is not model and type(module).__name__ in blocks:
            fully_shard(module, mesh=mesh)
    fully_shard(model, mesh=mesh)
    for module in model.modules():
        if isinstance(module, FSDPModule):
            module.set_gradient_divide_factor(1.0)  # a sum: the trainer divides by the step's global normaliser
            module.set_force_sum_reduction_for_comms(True)  # plain sums (gloo has no pre-multiplied sum)
    dist.fsdp = True
    return model


def set_gradient_sync(model: torch.nn.Module, sync: bool) -> None:
    """FSDP2: reduce-scatter the gradients in the next backward pass (True) or keep accumulating them (False)."""
    from torch.distributed.fsdp import FSDPModule

    if isinstance(model, FSDPModule):
        model.set_requires_gradient_sync(sync)


def full_tensor(t: torch.Tensor) -> torch.Tensor:
    """A sharded tensor (DTensor) gathered whole on every rank (a collective); any other tensor as it is."""
    from torch.distributed.tensor import DTensor

    return t.full_tensor() if isinstance(t, DTensor) else t


def local_tensor(t: torch.Tensor) -> torch.Tensor:
    """This rank's shard of a DTensor; any other tensor as it is."""
    from torch.distributed.tensor import DTensor

    return t.to_local() if isinstance(t, DTensor) else t


def full_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The model's weights, gathered whole on every rank (call on every rank, in the same order).

    Tied weights (embeddings = head) are gathered once and stay one tensor, as ``save_pretrained`` expects.
    """
    owner = {name: id(p) for name, p in model.named_parameters(remove_duplicate=False)}  # tied names share one
    gathered: dict[object, torch.Tensor] = {}
    out = {}
    for name, t in model.state_dict().items():
        key = owner.get(name, name)
        if key not in gathered:
            gathered[key] = full_tensor(t)
        out[name] = gathered[key]
    return out


def full_optimizer_state(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict:
    """The sharded optimizer's state gathered whole, on CPU, keyed by parameter name (rank 0 only; {} elsewhere)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

    return get_optimizer_state_dict(model, optimizer, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def load_full_optimizer_state(model: torch.nn.Module, optimizer: torch.optim.Optimizer, state: dict) -> None:
    """Load a state from ``full_optimizer_state`` into this rank's shard of the optimizer (every rank holds it)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

    set_optimizer_state_dict(model, optimizer, state, options=StateDictOptions(full_state_dict=True))


def launched_by_torchrun() -> bool:
    return all(name in os.environ for name in _ENV) and int(os.environ["WORLD_SIZE"]) > 1


def init_distributed(device: str, timeout_s: float, threads: int | None = None) -> Dist:
    """Join the job torchrun started (or return a world-size-1 ``Dist``); set this process's device and threads."""
    if not launched_by_torchrun():
        if threads is not None:
            torch.set_num_threads(threads)
        return Dist(device=resolve_device(device))
    rank, world, local_rank, local_world = (int(os.environ[name]) for name in _ENV)
    where = resolve_device(device, local_rank, world)
    if where.type == "cuda":
        torch.cuda.set_device(where)
    torch.set_num_threads(threads_per_process(local_world, threads))
    backend = "nccl" if where.type == "cuda" else "gloo"
    if not tdist.is_initialized():
        tdist.init_process_group(backend, timeout=timedelta(seconds=timeout_s),
                                 device_id=where if where.type == "cuda" else None)
    return Dist(rank, world, local_rank, local_world, where)


# ------------------------------------------------------------------ prompts


def shard(items: Sequence, rank: int, world_size: int) -> list:
    """Rank ``rank``'s contiguous share of ``items`` (sizes differ by at most one; world 1 = all of them)."""
    n = len(items)
    return list(items[rank * n // world_size : (rank + 1) * n // world_size])


# --------------------------------------------------------------- balancing


def imbalance(loads: Sequence[float]) -> float:
    """max / mean load over ranks (1.0 = perfectly even, or nothing to do)."""
    mean = sum(loads) / max(len(loads), 1)
    return max(loads) / mean if mean > 0 else 1.0


def plan_rebalance(sizes: list[list[int]]) -> list[list[tuple[int, int]]]:
    """Which samples each rank trains on, so that token loads are nearly even; moves few samples.

    ``sizes[r][i]`` is the token count of sample i on rank r. Returns, per
    destination rank, the ``(source rank, index)`` of its samples: its own
    that stay (in order), then the ones it receives (by source, index). Every
    sample appears exactly once. Greedy: move from the heaviest rank to the
    lightest the sample that best closes their gap (size nearest half the
    gap, smaller than the gap, so the spread shrinks), or else swap a pair
    that does; stop when neither helps. Then a rank left with nothing gets the
    smallest sample of a rank that has two or more, so no rank idles.
    """
    world = len(sizes)
    where = {(r, i): r for r in range(world) for i in range(len(sizes[r]))}
    size = {(r, i): s for r in range(world) for i, s in enumerate(sizes[r])}
    load = [float(sum(row)) for row in sizes]
    members = [sorted(k for k in where if where[k] == r) for r in range(world)]

    def move(key: tuple[int, int], dest: int) -> None:
        src = where[key]
        members[src].remove(key)
        members[dest].append(key)
        load[src] -= size[key]
        load[dest] += size[key]
        where[key] = dest

    for _ in range(4 * len(where) + 1):  # each change lowers sum(load^2); the bound is a guard
        heavy = max(range(world), key=lambda r: (load[r], -r))
        light = min(range(world), key=lambda r: (load[r], r))
        gap = load[heavy] - load[light]
        candidates = [k for k in members[heavy] if 0 < size[k] < gap]
        if candidates:
            move(min(candidates, key=lambda k: (abs(gap / 2 - size[k]), k)), light)
            continue
        swaps = [(a, b) for a in members[heavy] for b in members[light] if 0 < size[a] - size[b] < gap]
        if not swaps:
            break
        a, b = min(swaps, key=lambda ab: (abs(gap / 2 - (size[ab[0]] - size[ab[1]])), ab))
        move(a, light)
        move(b, heavy)
    for r in range(world):
        donors = [d for d in range(world) if len(members[d]) >= 2]
        if not members[r] and donors:
            donor = max(donors, key=lambda d: (load[d], -d))
            move(min(members[donor], key=lambda k: (size[k], k)), r)
    return [sorted(members[r], key=lambda k: (k[0] != r, k)) for r in range(world)]


@dataclass
class Rebalanced:
    samples: list
    imbalance_before: float
    imbalance_after: float
    moved: int  # samples that changed process


def rebalance(samples: list, dist: Dist, enabled: bool = True) -> Rebalanced:
    """All ranks: exchange kept samples (``.num_tokens`` each) per ``plan_rebalance``; ``enabled=False`` only measures."""
    sizes = dist.gather([s.num_tokens for s in samples])
    before = imbalance([sum(row) for row in sizes])
    if not enabled or not dist.enabled:
        return Rebalanced(samples, before, before, 0)
    plan = plan_rebalance(sizes)
    dest = {key: r for r, keys in enumerate(plan) for key in keys}
    outgoing = {i: s for i, s in enumerate(samples) if dest[(dist.rank, i)] != dist.rank}
    received = dist.gather(outgoing)  # received[src][i]: the samples rank src gives away
    mine = [samples[i] if src == dist.rank else received[src][i] for src, i in plan[dist.rank]]
    after = imbalance([sum(sizes[src][i] for src, i in keys) for keys in plan])
    moved = sum(len(part) for part in received)
    return Rebalanced(mine, before, after, moved)


# ------------------------------------------------------------------ launch


def launch_local(nproc: int, argv: list[str]) -> int:
    """Run ``dashrl ARGV`` in ``nproc`` processes on this node (what ``torchrun --standalone`` does); exit code."""
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    logging.getLogger("torch.distributed.elastic").setLevel(logging.CRITICAL)  # our one line says what failed
    config = LaunchConfig(min_nodes=1, max_nodes=1, nproc_per_node=nproc, run_id=str(uuid.uuid4()),
                          rdzv_backend="c10d", rdzv_endpoint="localhost:0", max_restarts=0, monitor_interval=0.2)
    try:
        elastic_launch(config, sys.executable)("-m", "dashrl", *argv)
    except ChildFailedError as exc:
        codes = {rank: failure.exitcode for rank, failure in exc.failures.items()}
        if set(codes.values()) == {2}:  # every rank stopped on the same user error (already printed)
            return 2
        # the cause: a process that was not stopped by the launcher (SIGTERM) after another failed
        first = min(codes, key=lambda rank: (codes[rank] == -signal.SIGTERM, exc.failures[rank].timestamp, rank))
        raise DistributedFailure(f"process {first} of {nproc} exited with code {codes[first]} "
                                 "(its output is above); the job stopped") from None
    return 0


class DistributedFailure(Exception):
    """A process of a multi-process run failed or a collective timed out."""


def describe_failure(exc: BaseException) -> str | None:
    """One line for a collective that failed because another process died or stalled; None if not one."""
    if not launched_by_torchrun() or not isinstance(exc, (tdist.DistError, RuntimeError)):
        return None
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    markers = ("gloo", "nccl", "connection", "timed out", "timeout", "peer", "socket", "closed")
    if not isinstance(exc, tdist.DistError) and not any(m in text.lower() for m in markers):
        return None
    return f"process {os.environ['RANK']}: a collective failed (another process died or stalled): {text[:300]}"


def check_resumable(extra: dict, world_size: int, fsdp: bool = False) -> None:
    """Refuse to resume a run (``extra``: its checkpoint's) with another number of processes or FSDP setting."""
    saved, saved_fsdp = extra.get("world_size", 1), extra.get("fsdp", False)
    if saved != world_size:
        raise UserError(f"cannot resume: the run was trained with {saved} process(es) and this launch has "
                        f"{world_size}; relaunch with --nproc {saved} (prompt shares and RNG streams depend "
                        "on the world size)")
    if saved_fsdp != fsdp:
        raise UserError(f"cannot resume: the run was trained with dist.fsdp={str(saved_fsdp).lower()} and this "
                        f"launch has dist.fsdp={str(fsdp).lower()} (the optimizer state is saved differently); "
                        f"relaunch with dist.fsdp={str(saved_fsdp).lower()}")
