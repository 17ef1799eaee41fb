"""Rollouts: an inference engine turns prompts into completions."""

from dashrl.rollout.engine import Completion, Engine, SamplingParams

__all__ = ["Completion", "Engine", "SamplingParams"]
