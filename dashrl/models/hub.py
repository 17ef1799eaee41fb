"""Is a model path that is not on disk a Hugging Face hub id? Answered in seconds, before any loading.

``from_pretrained`` on a name that is neither a local path nor a reachable hub
repository retries the network for about a minute and then reports a
connection failure. ``check_hub_model`` answers at once instead:

1. the name must be a valid repository id (``org/name``), else it is a
   missing local path;
2. a repository already in the local hub cache is accepted without network;
3. with ``HF_HUB_OFFLINE`` set, anything else is not available;
4. otherwise one metadata request (short timeout) asks the hub whether the
   repository exists; an unreachable hub, or no such repository, is a one-line
   ``UserError`` naming the path.
"""

from __future__ import annotations

import os

from dashrl.errors import UserError

TIMEOUT_S = 10.0


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def check_hub_model(path: str, repo_id: str, filename: str = "config.json") -> None:
    """Raise UserError unless ``repo_id`` (with ``filename`` in it) is cached locally or exists on the hub."""
    from huggingface_hub import HfApi, try_to_load_from_cache
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(repo_id)
    except HFValidationError:
        raise UserError(f"model path does not exist: {path} (and it is not a valid hub id)") from None
    if isinstance(try_to_load_from_cache(repo_id, filename), str):
        return
    if _offline():
        raise UserError(f"model path {path} does not exist locally and is not in the hub cache (HF_HUB_OFFLINE is "
                        "set)")
    try:
        HfApi().model_info(repo_id, timeout=TIMEOUT_S)
    except Exception as exc:  # noqa: BLE001 - network, not found, gated: told apart by the type name
        kind = type(exc).__name__
        if kind == "GatedRepoError":
            return  # it exists; loading says what access it needs
        if kind in ("RepositoryNotFoundError", "RevisionNotFoundError", "HfHubHTTPError"):
            raise UserError(f"model path {path} does not exist locally, and {repo_id} is not a model on the "
                            "Hugging Face hub") from None
        why = str(exc).strip().splitlines()[0] if str(exc).strip() else kind
        raise UserError(f"model path {path} does not exist locally, and the Hugging Face hub could not be reached "
                        f"to look it up as a hub id ({why})") from None
