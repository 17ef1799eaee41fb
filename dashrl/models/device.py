"""Where models run: ``model.device`` -> a torch device, and the CPU thread count per process.

    auto     CUDA when torch sees a GPU, else the CPU (in a multi-process run: the local rank's GPU)
    cpu      the CPU
    cuda     a GPU: cuda:0, or cuda:LOCAL_RANK in a multi-process run
    cuda:N   GPU N (single-process runs only: every rank would otherwise share it)

The policy, the reference model and the engine's copy all go to this device.
On a GPU, ``model.dtype=bfloat16`` is the usual choice (half the memory of
float32, no loss scaling, as in the paper); on the CPU float32 is faster.
A device that cannot be used (CUDA asked for but not available, a GPU index
that does not exist) is a one-line ``UserError``.
"""

from __future__ import annotations

import os
import re

import torch

from dashrl.config import DEVICE_PATTERN
from dashrl.errors import UserError


def resolve_device(spec: str, local_rank: int = 0, world_size: int = 1) -> torch.device:
    """The torch device for ``model.device`` = ``spec`` on the process with this local rank."""
    if not re.match(DEVICE_PATTERN, spec):
        raise UserError(f"model.device = {spec!r}: use auto, cpu, cuda or cuda:N")
    if spec == "cpu" or (spec == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        why = "this torch is built without CUDA" if torch.version.cuda is None else "no GPU is visible"
        raise UserError(f"model.device={spec} but CUDA is not available ({why}); use model.device=auto or cpu")
    if spec in ("auto", "cuda"):
        index = local_rank
    else:
        if world_size > 1:
            raise UserError(f"model.device={spec} would put every one of the {world_size} processes on one GPU; "
                            "use model.device=cuda (each process takes the GPU of its local rank)")
        index = int(spec.split(":")[1])
    count = torch.cuda.device_count()
    if index >= count:
        raise UserError(f"model.device={spec}: GPU {index} does not exist (this machine has {count}; "
                        "in a multi-process run, one process per GPU at most)")
    return torch.device("cuda", index)


def cpu_cores() -> int:
    """CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def threads_per_process(local_world_size: int, requested: int | None = None) -> int:
    """Intra-op threads for one of ``local_world_size`` processes on this machine: ``requested`` or an equal share."""
    if requested is not None:
        return requested
    return max(1, cpu_cores() // max(local_world_size, 1))
