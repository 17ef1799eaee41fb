"""Evaluation metrics computed from sampled completions."""
