"""Guards against silent divergence: non-finite steps, non-finite weights, and steps without reward signal.

- A step whose loss or gradient norm is not finite is skipped (no optimizer
  step, gradients dropped) and counted (``optimizer/nonfinite``); after
  ``MAX_NONFINITE_IN_A_ROW`` such steps in a row the run stops with
  ``TrainingDiverged``. A step that leaves any weight non-finite stops the run
  at once, before the weights reach the engine or a checkpoint, so the last
  checkpoint on disk is the last good one.
- ``NoSignalWatch`` warns once when ``NO_SIGNAL_STEPS`` steps in a row had no
  reward signal: every group filtered, or every reward equal (all 0 or all
  correct), so nothing is learned. The summary counts such steps.
"""

from __future__ import annotations

import math
from typing import Callable

import torch

from dashrl.errors import UserError
from dashrl.train.distributed import local_tensor

MAX_NONFINITE_IN_A_ROW = 3
NO_SIGNAL_STEPS = 10


class TrainingDiverged(UserError):
    """Loss, gradients or weights became non-finite; the message says what and suggests a fix."""


def is_finite(value: float | torch.Tensor) -> bool:
    return bool(torch.isfinite(value).all()) if isinstance(value, torch.Tensor) else math.isfinite(value)


def first_nonfinite_parameter(model: torch.nn.Module) -> str | None:
    """The name of the first parameter holding a NaN or infinity, or None (FSDP: in this process's shard).

    One device-to-host sync for the whole model; the name is looked up only when something is wrong.
    """
    params = [(name, local_tensor(p.detach())) for name, p in model.named_parameters() if p.requires_grad]
    if not params:
        return None
    finite = torch.stack([torch.isfinite(t).all() for _, t in params])
    if bool(finite.all()):
        return None
    return params[int((~finite).nonzero()[0])][0]


class NonFiniteGuard:
    """Counts non-finite steps in a row; raises TrainingDiverged past the limit."""

    def __init__(self, limit: int | None = None):
        self.limit = limit or MAX_NONFINITE_IN_A_ROW
        self.in_a_row = 0
        self.total = 0

    def record(self, finite: bool, step: int, what: str = "loss or gradient norm") -> None:
        if finite:
            self.in_a_row = 0
            return
        self.in_a_row += 1
        self.total += 1
        if self.in_a_row >= self.limit:
            raise TrainingDiverged(f"training diverged: the {what} was not finite for {self.in_a_row} steps in a row "
                                   f"(last at step {step}); lower train.lr or check the rewards; the last "
                                   "checkpoint on disk is from before the divergence")

    def check_weights(self, model: torch.nn.Module, step: int,
                      gather: Callable[[str | None], list[str | None]] | None = None) -> None:
        """Raise if a weight is non-finite; ``gather`` (FSDP) pools every process's finding, so all of them stop."""
        name = first_nonfinite_parameter(model)
        if gather is not None:
            name = next((found for found in gather(name) if found is not None), None)
        if name is not None:
            raise TrainingDiverged(f"training diverged: weight {name} became non-finite at step {step}; lower "
                                   "train.lr; the last checkpoint on disk is from before the divergence")


def no_signal(metrics: dict) -> bool:
    """True when a step's batch carried no learning signal (every group filtered, or every group uniform)."""
    if metrics.get("filter/dropped_frac", 0.0) >= 1.0:
        return True
    uniform = metrics.get("groups/all_correct", 0.0) + metrics.get("groups/all_wrong", 0.0)
    return uniform >= 1.0 or metrics.get("reward/mean", 1.0) == 0.0


class NoSignalWatch:
    """Warns once, through ``say``, after ``NO_SIGNAL_STEPS`` steps in a row without reward signal."""

    def __init__(self, say: Callable[[str], None], steps: int | None = None):
        self.say = say
        self.steps = steps or NO_SIGNAL_STEPS
        self.in_a_row = 0
        self.warned = False

    def record(self, metrics: dict) -> None:
        self.in_a_row = self.in_a_row + 1 if no_signal(metrics) else 0
        if self.in_a_row >= self.steps and not self.warned:
            self.warned = True
            self.say(f"dashrl: warning: no reward signal: check the answer format ({self.in_a_row} steps in a row "
                     "with every group filtered or all rewards equal, so nothing is learned)")
