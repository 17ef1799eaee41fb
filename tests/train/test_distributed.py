"""Data-parallel training: prompt shares, the rebalancing plan, and 2 gloo processes vs 1 on the same samples.

The 2-process run (``dist_worker.py`` in two subprocesses, 1 thread each) takes
one step of every case on fixed samples; the test process takes the same
steps alone. With SGD the weight change is -lr x gradient, so equal changes
mean equal gradients: summing over processes and the all-reduced normaliser
give exactly the one-process loss, for every loss_agg, with filtering on and
off and K = 2. Those take about a minute (``make test-dist``); the pure parts run
in the default suite.
"""

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from dashrl.train.distributed import Dist, imbalance, plan_rebalance, shard
from tests.train import dist_worker

HERE = Path(__file__).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rank_env(rank: int, world: int, port: int) -> dict:
    return {**os.environ, "RANK": str(rank), "WORLD_SIZE": str(world), "LOCAL_RANK": str(rank),
            "LOCAL_WORLD_SIZE": str(world), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port),
            "OMP_NUM_THREADS": "1"}


# ------------------------------------------------------------- pure parts


def test_shard_is_contiguous_and_covers_everything():
    items = list(range(10))
    assert shard(items, 0, 1) == items  # one process: today's behaviour
    parts = [shard(items, r, 3) for r in range(3)]
    assert parts == [[0, 1, 2], [3, 4, 5], [6, 7, 8, 9]]  # 10 * r // 3 = 0, 3, 6


def test_imbalance_is_max_over_mean():
    assert imbalance([30, 10]) == 1.5  # mean 20
    assert imbalance([0, 0]) == 1.0


def _loads(sizes, plan):
    return [sum(sizes[src][i] for src, i in keys) for keys in plan]


def test_plan_rebalance_evens_a_skewed_case_and_loses_nothing():
    # rank 0 kept every long sample, rank 2 nothing: loads 600 / 60 / 0, mean 220, imbalance 600 / 220
    sizes = [[100, 90, 80, 70, 60, 50, 40, 30, 20, 20, 20, 20], [10, 10, 10, 10, 10, 10], []]
    assert imbalance([sum(r) for r in sizes]) == pytest.approx(600 / 220)
    plan = plan_rebalance(sizes)
    keys = sorted(k for keys in plan for k in keys)
    assert keys == sorted((r, i) for r in range(3) for i in range(len(sizes[r])))  # each exactly once
    assert imbalance(_loads(sizes, plan)) < 1.1
    assert all(plan[r][: len([k for k in plan[r] if k[0] == r])] == [k for k in plan[r] if k[0] == r]
               for r in range(3))  # own samples first, in order


def test_plan_rebalance_moves_nothing_when_balanced_and_swaps_when_a_move_cannot_help():
    assert plan_rebalance([[5, 3], [4, 4]]) == [[(0, 0), (0, 1)], [(1, 0), (1, 1)]]
    # loads 20 / 14, gap 6: no single sample is under 6 tokens, swapping 12 for 9 gives 17 / 17
    plan = plan_rebalance([[12, 8], [9, 5]])
    assert sorted(_loads([[12, 8], [9, 5]], plan)) == [17, 17]


def test_plan_rebalance_gives_an_idle_rank_a_sample():
    sizes = [[100], [1, 1], []]  # nothing can even out 100, but rank 2 should not idle
    plan = plan_rebalance(sizes)
    assert all(plan[r] for r in range(3))
    assert sorted(k for keys in plan for k in keys) == [(0, 0), (1, 0), (1, 1)]


def test_one_process_dist_is_a_no_op():
    dist = Dist()
    assert not dist.enabled and dist.all_sum([1, 2.5]) == [1, 2.5] and dist.gather_list([3]) == [3]
    p = torch.nn.Parameter(torch.ones(2))
    p.grad = torch.full((2,), 3.0)
    dist.all_reduce_grads([p])
    assert torch.equal(p.grad, torch.full((2,), 3.0))


# ------------------------------------------------------- 2 gloo processes


@pytest.fixture(scope="module")
def two_process_results(tiny_model_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("dist")
    port = free_port()
    procs = [subprocess.Popen([sys.executable, str(HERE / "dist_worker.py"), str(tiny_model_dir), str(out)],
                              env=rank_env(r, 2, port), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for r in range(2)]
    logs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], "\n".join(logs)[-3000:]
    return [torch.load(out / f"rank{r}.pt", weights_only=False) for r in range(2)]


@pytest.mark.dist
@pytest.mark.parametrize("case", dist_worker.CASES, ids=lambda c: "-".join(map(str, c)))
def test_two_process_gradient_equals_one_process(case, two_process_results, tiny_model_dir, tmp_path):
    alone, metrics = dist_worker.run_case(str(tiny_model_dir), str(tmp_path / "run"), case)
    assert max(d.abs().max().item() for d in alone) > 1e-4  # the step did change the weights
    for rank in range(2):
        together = two_process_results[rank][case]
        for a, b in zip(alone, together):
            assert torch.allclose(a, b, rtol=1e-4, atol=1e-7), (rank, (a - b).abs().max().item())
    m2 = two_process_results[0][(case, "metrics")]
    for key in ("reward/mean", "filter/dropped_frac", "tokens/trained", "loss", "grad_norm", "mismatch/abs_mean",
                "mismatch/abs_max", "mismatch/kl"):
        assert m2[key] == pytest.approx(metrics[key], rel=1e-4, abs=1e-7), key
    skewed = case[4]
    if skewed:  # rank 0 kept 28 tokens, rank 1 18: one 5-token sample moves, 23 / 23
        assert m2["dist/moved_samples"] == 1
        assert m2["dist/imbalance_before"] == pytest.approx(28 / 23) and m2["dist/imbalance_after"] == 1.0
    else:
        assert m2["dist/moved_samples"] == 0


@pytest.mark.dist
@pytest.mark.parametrize("case", dist_worker.FSDP_CASES, ids=lambda c: "-".join(map(str, c[:5])) + "-" + "-".join(c[5]))
def test_fsdp_two_process_gradient_equals_one_process(case, two_process_results, tiny_model_dir, tmp_path):
    alone, metrics = dist_worker.run_case(str(tiny_model_dir), str(tmp_path / "run"), case)
    assert max(d.abs().max().item() for d in alone) > 1e-4
    for rank in range(2):
        for a, b in zip(alone, two_process_results[rank][("fsdp", case)]):
            assert torch.allclose(a, b, rtol=1e-4, atol=1e-7), (rank, (a - b).abs().max().item())
    m2 = two_process_results[0][("fsdp", case, "metrics")]
    for key in ("reward/mean", "filter/dropped_frac", "tokens/trained", "loss", "grad_norm"):
        assert m2[key] == pytest.approx(metrics[key], rel=1e-4, abs=1e-7), key
    # idle passes: rank 0's 2 micro-batches against rank 1's 4; one flush pass each when the last round is empty
    expected = {"dist.rebalance=false": 2, "train.generation_batch_size=2": 2}
    assert m2["dist/idle_passes"] == next((n for key, n in expected.items() if key in case[5]), 0)


@pytest.mark.dist
def test_samples_jsonl_takes_the_first_groups_of_every_process(two_process_results):
    assert two_process_results[0]["samples"] == ["rank0"] * dist_worker.G + ["rank1"] * dist_worker.G


@pytest.mark.dist
def test_moved_samples_carry_their_logprobs(two_process_results):
    # rank 0 held x0..x3 (5 tokens each), rank 1 nothing: two move, each with its own old / reference log-probs
    got = {rank: two_process_results[rank]["exchange"] for rank in range(2)}
    assert [s[0] for s in got[0]] == ["x2", "x3"] and [s[0] for s in got[1]] == ["x0", "x1"]
    assert all(has_old and has_ref for rank in got for _, _, has_old, has_ref in got[rank])


@pytest.mark.dist
def test_gradients_are_summed_in_buckets_of_any_dtype(two_process_results):
    for rank in range(2):
        f32, bf16, missing_on_rank0 = two_process_results[rank]["grads"]
        assert torch.equal(f32, torch.full((4,), 3.0))  # 1 + 2
        assert bf16.dtype == torch.bfloat16 and torch.equal(bf16.float(), torch.full((2,), 3.0))
        assert torch.equal(missing_on_rank0, torch.ones(3))  # rank 0 had none: zeros + ones


def test_nproc_is_checked_before_anything_starts(monkeypatch, capsys):
    from dashrl.cli import _without_nproc, main

    assert _without_nproc(["train", "--nproc", "2", "c.yaml", "--nproc=3", "a=1"]) == ["train", "c.yaml", "a=1"]
    assert main(["train", "--nproc", "0", "train.steps=1"]) == 2
    assert "--nproc must be at least 1" in capsys.readouterr().err
    for name, value in (("RANK", "0"), ("WORLD_SIZE", "2"), ("LOCAL_RANK", "0"), ("LOCAL_WORLD_SIZE", "2")):
        monkeypatch.setenv(name, value)
    assert main(["train", "--nproc", "2", "train.steps=1"]) == 2
    assert "under torchrun, leave it out" in capsys.readouterr().err
