"""model.device: auto picks CUDA only when torch sees it; explicit devices are checked with one-line errors."""

import pytest
import torch

from dashrl.config import ConfigError, load_config
from dashrl.errors import UserError
from dashrl.models import device as device_mod
from dashrl.models.device import resolve_device, threads_per_process


@pytest.fixture
def gpus(monkeypatch):
    """Pretend torch sees ``n`` GPUs (no CUDA call is made by resolve_device beyond these two)."""
    def set_count(n: int) -> None:
        monkeypatch.setattr(torch.cuda, "is_available", lambda: n > 0)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: n)
    return set_count


def test_auto_is_cpu_without_cuda_and_the_local_rank_gpu_with_it(gpus):
    gpus(0)
    assert resolve_device("auto") == torch.device("cpu")
    assert resolve_device("auto", local_rank=1, world_size=2) == torch.device("cpu")
    gpus(2)
    assert resolve_device("auto") == torch.device("cuda", 0)
    assert resolve_device("auto", local_rank=1, world_size=2) == torch.device("cuda", 1)
    assert resolve_device("cpu") == torch.device("cpu")  # an explicit cpu stays on the CPU
    assert resolve_device("cuda", local_rank=1, world_size=2) == torch.device("cuda", 1)
    assert resolve_device("cuda:1") == torch.device("cuda", 1)


def test_unusable_devices_are_one_line_errors(gpus):
    gpus(0)
    with pytest.raises(UserError, match="CUDA is not available.*model.device=auto or cpu"):
        resolve_device("cuda")
    gpus(2)
    with pytest.raises(UserError, match="GPU 2 does not exist"):
        resolve_device("cuda:2")
    with pytest.raises(UserError, match="every one of the 2 processes on one GPU"):
        resolve_device("cuda:0", local_rank=0, world_size=2)
    with pytest.raises(UserError, match="GPU 2 does not exist"):
        resolve_device("auto", local_rank=2, world_size=3)  # more processes than GPUs
    for message in ("cuda", "cuda:2"):
        try:
            resolve_device(message)
        except UserError as exc:
            assert "\n" not in str(exc)


def test_config_accepts_devices_and_rejects_others():
    assert load_config().model.device == "auto"
    assert load_config(overrides=["model.device=cuda:3"]).model.device == "cuda:3"
    with pytest.raises(ConfigError, match="model.device"):
        load_config(overrides=["model.device=gpu"])


def test_threads_split_the_cores_between_local_processes(monkeypatch):
    monkeypatch.setattr(device_mod, "cpu_cores", lambda: 8)
    assert threads_per_process(1) == 8 and threads_per_process(2) == 4 and threads_per_process(16) == 1
    assert threads_per_process(2, requested=3) == 3
