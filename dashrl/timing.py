"""Named stage timers: wall seconds and token throughput per stage of a step.

A ``StageTimer`` accumulates ``time.perf_counter`` wall time per named stage
(generation, scoring, backward, ...) within one training step; ``reset``
returns a flat metrics snapshot and clears it for the next step.
``summarize_shares`` turns the per-step seconds of a whole run into total
seconds and share of time per stage.

Simplifications: stages are not nested-aware (a stage timed inside another is
counted in both), timers are not thread safe, and on CUDA each stage end calls
``torch.cuda.synchronize()`` so that queued kernels are charged to the stage
that launched them (a small cost, and a no-op on CPU or before CUDA is used).
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager

import torch


def _synchronize_cuda() -> None:
    """Wait for queued CUDA work, only if CUDA is present and already in use."""
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


@contextmanager
def _timed(seconds: dict[str, float], name: str) -> Iterator[None]:
    """Add the body's wall seconds to ``seconds[name]``, even if it raises (CUDA work included)."""
    start = time.perf_counter()
    try:
        yield
    finally:
        _synchronize_cuda()
        seconds[name] += time.perf_counter() - start


class StageTimer:
    """Accumulates wall seconds (and optional token counts) per named stage within one step."""

    def __init__(self) -> None:
        self._seconds: dict[str, float] = defaultdict(float)
        self._tokens: dict[str, int] = defaultdict(int)

    @contextmanager
    def stage(self, name: str, tokens: int = 0) -> Iterator[None]:
        """Time the body under ``name``; re-entering the same name accumulates."""
        try:
            with _timed(self._seconds, name):
                yield
        finally:
            self._tokens[name] += tokens

    def add_tokens(self, name: str, tokens: int) -> None:
        """Credit ``tokens`` to stage ``name`` (e.g. once the count is known)."""
        self._tokens[name] += tokens

    def seconds(self) -> dict[str, float]:
        """Accumulated wall seconds per stage."""
        return dict(self._seconds)

    def tokens_per_second(self) -> dict[str, float]:
        """Tokens per second for stages that have both tokens and time."""
        return {
            name: tokens / self._seconds[name]
            for name, tokens in self._tokens.items()
            if tokens > 0 and self._seconds.get(name, 0.0) > 0
        }

    def reset(self) -> dict[str, float]:
        """Return ``time/<name>`` and ``throughput/<name>_tok_s`` metrics, then clear."""
        snapshot = {f"time/{name}": secs for name, secs in self._seconds.items()}
        snapshot.update(
            {f"throughput/{name}_tok_s": rate for name, rate in self.tokens_per_second().items()}
        )
        self._seconds.clear()
        self._tokens.clear()
        return snapshot


def summarize_shares(step_seconds: list[dict[str, float]]) -> dict[str, dict[str, float]]:
    """Total seconds and share of the run's summed time per stage, largest first.

    Shares sum to 1 whenever any time was recorded; all shares are 0 otherwise.
    """
    totals: dict[str, float] = defaultdict(float)
    for step in step_seconds:
        for name, secs in step.items():
            totals[name] += secs
    grand_total = sum(totals.values())
    ordered = sorted(totals.items(), key=lambda item: item[1], reverse=True)
    return {
        name: {"seconds": secs, "share": secs / grand_total if grand_total > 0 else 0.0}
        for name, secs in ordered
    }


class RunClock:
    """Wall seconds of a whole run by named stage (model load, evaluations, training, checkpoints, ...).

    Every second of a run's ``wall_seconds`` is meant to sit in one stage:
    ``stage`` times a block, ``add`` books seconds measured elsewhere (model
    loading happens before the run's clock starts), ``restore`` carries the
    totals of earlier sessions of a resumed run.
    """

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        with _timed(self.seconds, name):
            yield

    def add(self, name: str, seconds: float) -> None:
        self.seconds[name] += seconds

    def restore(self, totals: dict[str, float]) -> None:
        for name, seconds in totals.items():
            self.seconds[name] += seconds

    def totals(self) -> dict[str, float]:
        return dict(self.seconds)
