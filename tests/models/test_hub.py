"""A model path that is not on disk: a hub id is looked up in seconds, never a minute of retries (issue 11.7)."""

import time

import huggingface_hub
import pytest

from dashrl.errors import UserError
from dashrl.models import hub
from dashrl.models.loading import resolve_model_path


class _NotFound(Exception):
    pass


_NotFound.__name__ = "RepositoryNotFoundError"


def _hub(monkeypatch, answer):
    def model_info(self, repo_id, **kwargs):
        assert kwargs.get("timeout") == hub.TIMEOUT_S  # never an unbounded wait
        if isinstance(answer, Exception):
            raise answer
        return object()

    monkeypatch.setattr(huggingface_hub.HfApi, "model_info", model_info)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)


def test_missing_directory_that_looks_like_a_hub_id_is_refused_at_once_when_the_hub_is_unreachable(monkeypatch):
    _hub(monkeypatch, OSError("[Errno -2] Name or service not known"))
    start = time.monotonic()
    with pytest.raises(UserError, match="does not exist locally, and the Hugging Face hub could not be reached"):
        resolve_model_path("nosuchdir/model")
    assert time.monotonic() - start < 5


def test_unknown_repository_says_it_is_not_on_the_hub(monkeypatch):
    _hub(monkeypatch, _NotFound("404"))
    with pytest.raises(UserError, match="nosuchdir/model is not a model on the Hugging Face hub"):
        resolve_model_path("nosuchdir/model")


def test_offline_mode_refuses_an_uncached_id_without_network(monkeypatch):
    _hub(monkeypatch, AssertionError("no network call when offline"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(UserError, match="not in the hub cache \\(HF_HUB_OFFLINE is set\\)"):
        resolve_model_path("nosuchdir/model")


def test_existing_and_cached_repositories_are_accepted(monkeypatch):
    _hub(monkeypatch, None)
    assert resolve_model_path("Qwen/Qwen2.5-0.5B") == "Qwen/Qwen2.5-0.5B"
    _hub(monkeypatch, AssertionError("a cached repository needs no network"))
    monkeypatch.setattr(huggingface_hub, "try_to_load_from_cache", lambda repo, name: "/cache/config.json")
    assert resolve_model_path("Qwen/Qwen2.5-0.5B") == "Qwen/Qwen2.5-0.5B"


def test_invalid_repository_id_is_a_missing_path(monkeypatch):
    _hub(monkeypatch, AssertionError("an invalid id is never looked up"))
    with pytest.raises(UserError, match="model path does not exist: no such/model"):
        resolve_model_path("no such/model")
