"""Shared fixtures: a tiny random testbed-architecture model saved to disk."""

import pytest
import torch
from transformers.utils import logging as hf_logging

from dashrl.testbed.model import build_model, build_tokenizer

hf_logging.disable_progress_bar()
hf_logging.set_verbosity_error()


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """A random-init model with the testbed architecture at its smallest (fast, not pretrained)."""
    path = tmp_path_factory.mktemp("tiny-model")
    tokenizer = build_tokenizer()
    build_model(len(tokenizer), seed=0, hidden=32, layers=1).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    """Never touch the user's cache from tests."""
    monkeypatch.setenv("DASHRL_CACHE", str(tmp_path / "cache"))
    torch.manual_seed(0)
