"""Reward functions that score a model completion against a reference answer."""
