"""The value every reward function returns: a score plus why it was given.

Simplification: a reward is one scalar in [0, 1]; there is no per-token or
partial-credit structure, only a short machine-readable ``reason`` that lets
evaluation code count failure modes (e.g. how often the model forgot to box).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RewardResult:
    """Outcome of scoring one completion.

    score:     reward in [0, 1]
    reason:    short machine-readable cause, e.g. "correct", "wrong_answer",
               "no_box", "empty"
    extracted: the answer text that was compared, if any was found
    """

    score: float
    reason: str
    extracted: str | None = None
