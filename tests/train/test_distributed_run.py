"""`dashrl train --nproc 2` end to end on the tiny model (2 gloo processes, 1 thread each; `make test-dist`).

A 2-process run writes metrics, checkpoints and a summary from process 0 and
resumes exactly (every process's RNG restored); resuming with another number
of processes is refused; killing one process fails the whole job, non-zero,
within the collective timeout.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from dashrl.cli import main
from dashrl.runlog import read_metrics

pytestmark = pytest.mark.dist

FAST = ["algo.group_size=4", "algo.prompts_per_step=4", "train.micro_batch_size=4", "sampling.max_new_tokens=8",
        "eval.num_problems=8", "eval.samples=2", "eval.ks=[1,2]", "eval.every=0", "train.lr=0.05",
        "dist.timeout_s=30"]


def dashrl(*args: str, **kwargs) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "dashrl", *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kwargs)


def finish(proc: subprocess.Popen, timeout: float = 300) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


def rows(run: Path) -> list[dict]:
    return read_metrics(run / "metrics.jsonl")


def weights(model_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(model_dir / "model.safetensors")


@pytest.mark.parametrize("fsdp", [False, True], ids=["replicated", "fsdp"])
def test_two_processes_write_metrics_and_checkpoints_and_resume_exactly(fsdp, tiny_model_dir, tmp_path):
    run = tmp_path / "run"
    sharding = ["dist.fsdp=true", "algo.beta=0.05"] if fsdp else []  # FSDP: the reference is sharded too
    code, out, err = finish(dashrl("train", "--nproc", "2", "--no-progress", f"model.path={tiny_model_dir}",
                                   f"log.run_dir={run}", "train.steps=3", "log.save_every=1", "log.keep_last=2",
                                   "algo.filter_tau=null", *FAST, *sharding))
    assert code == 0, err[-3000:]
    assert out.count("before RL") == 1  # only process 0 prints the summary
    full = rows(run)
    assert [r["step"] for r in full] == [0, 1, 2, 3]
    for key in ("dist/imbalance_before", "dist/imbalance_after", "dist/moved_samples", "time/rebalance"):
        assert key in full[1], key
    assert full[1]["tokens/generated"] > 8 * 4  # both processes' 16 completions counted
    summary = json.loads((run / "summary.json").read_text())
    assert summary["steps"] == 3
    ckpts = run / "checkpoints"
    state = torch.load(ckpts / "step_000003" / "trainer_state.pt", weights_only=False)
    assert state["extra"]["world_size"] == 2 and len(state["extra"]["rng_by_rank"]) == 2
    assert state["extra"]["fsdp"] == fsdp
    final, initial = weights(ckpts / "step_000003" / "model"), weights(tiny_model_dir)
    assert set(final) == set(initial) and all(not t.isnan().any() for t in final.values())
    assert final["model.norm.weight"].shape == initial["model.norm.weight"].shape  # whole, not a shard

    # go back to step 2 and redo step 3: same metrics, same weights
    shutil.rmtree(ckpts / "step_000003")
    (ckpts / "latest").write_text("step_000002\n")
    code, _, err = finish(dashrl("train", "--nproc", "2", "--no-progress", "--resume", str(run)))
    assert code == 0, err[-3000:]
    again = rows(run)
    assert [r["step"] for r in again] == [0, 1, 2, 3]
    for key in ("reward/mean", "completion/mean_length", "tokens/generated", "loss", "grad_norm"):
        assert again[3][key] == pytest.approx(full[3][key], rel=1e-6), key
    redone = weights(ckpts / "step_000003" / "model")
    assert all(torch.allclose(final[k], redone[k], atol=1e-6) for k in final)

    # one process cannot continue a 2-process run, nor 2 processes with FSDP switched
    assert main(["train", "--no-progress", "--resume", str(run), "train.steps=4"]) == 2
    code, _, err = finish(dashrl("train", "--nproc", "2", "--no-progress", "--resume", str(run), "train.steps=4",
                                 f"dist.fsdp={str(not fsdp).lower()}"))
    assert code != 0 and f"trained with dist.fsdp={str(fsdp).lower()}" in err, err[-2000:]


def _child_with_rank(parent: int, rank: int) -> int:
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            ppid = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
            env = (proc / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if ppid == parent and f"RANK={rank}".encode() in env:
            return int(proc.name)
    raise AssertionError(f"no process with RANK={rank} under {parent}")


def start_long_run(model_dir: Path, run: Path, *extra: str) -> subprocess.Popen:
    """A 2-process run of 100000 steps, returned once it has logged 3 rows (training is under way)."""
    proc = dashrl("train", "--nproc", "2", "--no-progress", f"model.path={model_dir}", f"log.run_dir={run}",
                  "train.steps=100000", "log.save_every=0", *FAST, *extra)
    deadline = time.time() + 240
    while len(rows(run)) < 3:  # [] until metrics.jsonl exists
        assert proc.poll() is None and time.time() < deadline, proc.communicate()[1][-3000:]
        time.sleep(0.5)
    return proc


def test_killing_one_process_fails_the_job_within_the_timeout(tiny_model_dir, tmp_path):
    proc = start_long_run(tiny_model_dir, tmp_path / "run")
    os.kill(_child_with_rank(proc.pid, 1), signal.SIGKILL)
    killed = time.time()
    code, _, err = finish(proc, timeout=120)
    assert code != 0
    assert time.time() - killed < 30 + 15  # dist.timeout_s, plus shutting the survivor down
    assert "dashrl: error: process 1 of 2 exited with code -9" in err


def test_a_stalled_process_fails_the_job_after_the_collective_timeout(tiny_model_dir, tmp_path):
    timeout = 10
    proc = start_long_run(tiny_model_dir, tmp_path / "run", f"dist.timeout_s={timeout}")
    stalled = _child_with_rank(proc.pid, 1)
    os.kill(stalled, signal.SIGSTOP)  # alive, sockets open, never answers
    stopped = time.time()
    try:
        code, _, err = finish(proc, timeout=180)
    finally:
        if Path(f"/proc/{stalled}").exists():
            os.kill(stalled, signal.SIGKILL)
    assert code != 0
    assert timeout <= time.time() - stopped < timeout + 90  # the collective timed out; the launcher stopped the rest
    assert "dashrl: error: process 0: a collective failed" in err
