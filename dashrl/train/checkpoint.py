"""Atomic checkpoints of a training run: model, tokenizer, optimizer, scheduler, RNG.

Layout under ``run_dir/checkpoints/``::

    step_000100/model/            Hugging Face format (plain from_pretrained loads it; LoRA merged in)
    step_000100/adapter/          LoRA runs only: the adapter in PEFT's format (what resume loads)
    step_000100/trainer_state.pt  optimizer, scheduler, RNG states, step, extra
    latest                        text file naming the newest step directory

A checkpoint is written into a ``.tmp-*`` directory, fsynced, then renamed to
its final ``step_*`` name, and only then is ``latest`` replaced (via a temp
file and ``os.replace``). A crash at any point therefore leaves either the
previous checkpoint or the new complete one visible to ``latest_checkpoint``;
a failed save removes its own ``.tmp-*`` directory (a full disk is reported as
a one-line ``UserError``: "no space left on device", previous checkpoint
intact), and entries left by a kill are ignored and removed by the next save.

Simplifications: one writer per run directory (no locking); a checkpoint
holds whole states (an FSDP run gathers its shards into them first);
saving a step that already exists replaces it, and during that swap
``latest_checkpoint`` may briefly fall back to the next-highest complete step.
"""

from __future__ import annotations

import errno
import os
import random
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable

import torch

from dashrl.errors import UserError
from dashrl.models.lora import ADAPTER, is_lora, save_adapter, save_plain

CHECKPOINTS = "checkpoints"
LATEST = "latest"
TRAINER_STATE = "trainer_state.pt"
MODEL = "model"
TMP_PREFIX = ".tmp-"
_STEP_DIR = re.compile(r"^step_(\d+)$")


def _step_name(step: int) -> str:
    return f"step_{step:06d}"


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_tree(root: Path) -> None:
    """Flush every file under ``root`` and every directory entry to disk."""
    for dirpath, _, filenames in os.walk(root):
        for filename in filenames:
            with open(Path(dirpath) / filename, "rb") as f:
                os.fsync(f.fileno())
        _fsync_dir(Path(dirpath))


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _remove_atomically(path: Path) -> None:
    """Rename ``path`` to a ``.tmp-`` name first, so a half-deleted dir is never visible."""
    doomed = Path(tempfile.mkdtemp(prefix=f"{TMP_PREFIX}del-", dir=path.parent))
    os.replace(path, doomed / path.name)
    _remove(doomed)


def _clean_tmp(ckpt_root: Path) -> None:
    for entry in ckpt_root.glob(f"{TMP_PREFIX}*"):
        _remove(entry)


def rng_states() -> dict[str, Any]:
    states: dict[str, Any] = {"python": random.getstate(), "torch": torch.get_rng_state()}
    try:
        import numpy as np

        states["numpy"] = np.random.get_state()
    except ImportError:
        pass
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def restore_rng_states(states: dict[str, Any]) -> None:
    random.setstate(states["python"])
    torch.set_rng_state(states["torch"])
    if "numpy" in states:
        import numpy as np

        np.random.set_state(states["numpy"])
    cuda = states.get("cuda")
    if cuda is not None and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)


def _write_latest(ckpt_root: Path, name: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f"{TMP_PREFIX}{LATEST}-", dir=ckpt_root)
    os.fchmod(fd, 0o644)
    with os.fdopen(fd, "w") as f:
        f.write(name + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, ckpt_root / LATEST)
    _fsync_dir(ckpt_root)


def _move_into_place(tmp_dir: Path, final: Path) -> None:
    """Rename ``tmp_dir`` to ``final``, replacing an existing checkpoint of the same step."""
    if final.exists():
        _remove_atomically(final)
    os.replace(tmp_dir, final)
    _fsync_dir(final.parent)


def _step_dirs(ckpt_root: Path) -> list[tuple[int, Path]]:
    """All ``step_*`` directories as (step, path), ascending by step."""
    found = []
    for entry in ckpt_root.iterdir() if ckpt_root.is_dir() else []:
        match = _STEP_DIR.match(entry.name)
        if match and entry.is_dir():
            found.append((int(match.group(1)), entry))
    return sorted(found)


def _prune(ckpt_root: Path, keep_last: int, just_saved: Path) -> None:
    """Keep the ``keep_last`` highest steps (always including ``just_saved``)."""
    others = [path for _, path in _step_dirs(ckpt_root) if path != just_saved]
    for path in others[: max(len(others) - (keep_last - 1), 0)]:
        _remove_atomically(path)


def save_checkpoint(
    run_dir: Path,
    step: int,
    model: Any,
    tokenizer: Any,
    optimizer: torch.optim.Optimizer | None,
    scheduler: Any,
    extra: dict[str, Any],
    keep_last: int | None = None,
    dtype: torch.dtype | None = None,
    model_state: dict | None = None,
    optimizer_state: dict | None = None,
) -> Path:
    """Atomically write checkpoint ``step`` and point ``latest`` at it; return its dir.

    ``dtype``: the dtype of the saved model weights (None = as in memory); adapters and optimizer
    state keep theirs. ``model_state`` / ``optimizer_state``: what to write instead of the model's
    and optimizer's own state dicts (FSDP: gathered whole from the shards).
    """
    if keep_last is not None and keep_last < 1:
        raise ValueError(f"keep_last must be >= 1 or None, got {keep_last}")
    ckpt_root = Path(run_dir) / CHECKPOINTS
    ckpt_root.mkdir(parents=True, exist_ok=True)
    _clean_tmp(ckpt_root)
    tmp_dir = Path(tempfile.mkdtemp(prefix=f"{TMP_PREFIX}{_step_name(step)}-", dir=ckpt_root))
    try:
        tmp_dir.chmod(0o755)
        save_plain(model, tmp_dir / MODEL, dtype, model_state)  # with LoRA: the merged model, loadable without peft
        if is_lora(model):
            save_adapter(model, tmp_dir / ADAPTER)  # the adapter alone, for resume
        tokenizer.save_pretrained(tmp_dir / MODEL)
        state = {
            "step": step,
            "extra": extra,
            "optimizer": optimizer_state if optimizer_state is not None else (
                optimizer.state_dict() if optimizer is not None else None),
            "scheduler": scheduler.state_dict() if scheduler is not None else None,
            "rng": rng_states(),
        }
        torch.save(state, tmp_dir / TRAINER_STATE)
        _fsync_tree(tmp_dir)
    except BaseException as exc:  # leave no temp directory behind, whatever stopped the write
        _remove(tmp_dir)
        if isinstance(exc, OSError) or (isinstance(exc, RuntimeError) and _is_write_failure(exc)):
            raise _write_error(exc, ckpt_root, step) from None
        raise
    final = ckpt_root / _step_name(step)
    _move_into_place(tmp_dir, final)
    _write_latest(ckpt_root, final.name)
    if keep_last is not None:
        _prune(ckpt_root, keep_last, final)
    return final


def _is_write_failure(exc: RuntimeError) -> bool:
    """torch.save's own words for a failed write (a full disk gives "unexpected pos ...")."""
    text = str(exc)
    return "unexpected pos" in text or "failed writing" in text or "write failed" in text


def _write_error(exc: BaseException, ckpt_root: Path, step: int) -> UserError:
    """The one-line error for a checkpoint that could not be written (its temp directory is already gone)."""
    full = getattr(exc, "errno", None) == errno.ENOSPC or shutil.disk_usage(ckpt_root).free < (64 << 20)
    why = "no space left on device" if full else (getattr(exc, "strerror", None) or str(exc).splitlines()[0])
    previous = _read_latest(ckpt_root)
    kept = f"; the previous checkpoint ({previous.name}) is intact" if previous is not None and previous.is_dir() else ""
    return UserError(f"could not write checkpoint {_step_name(step)} in {ckpt_root}: {why}{kept}")


def _is_complete(ckpt_dir: Path) -> bool:
    return (ckpt_dir / TRAINER_STATE).is_file() and (ckpt_dir / MODEL).is_dir()


def _read_latest(ckpt_root: Path) -> Path | None:
    try:
        name = (ckpt_root / LATEST).read_text().strip()
    except OSError:
        return None
    if not _STEP_DIR.match(name):
        return None
    return ckpt_root / name


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The checkpoint named by ``latest`` if complete, else the highest complete step dir."""
    ckpt_root = Path(run_dir) / CHECKPOINTS
    named = _read_latest(ckpt_root)
    if named is not None and _is_complete(named):
        return named
    complete = [path for _, path in _step_dirs(ckpt_root) if _is_complete(path)]
    return complete[-1] if complete else None


def load_trainer_state(
    ckpt_dir: Path, optimizer: torch.optim.Optimizer | None, scheduler: Any,
    load_optimizer: Callable[[dict], None] | None = None,
) -> dict[str, Any]:
    """Restore optimizer, scheduler and RNG states; return ``{"step", "extra"}``.

    Optimizer tensors are loaded on CPU; ``Optimizer.load_state_dict`` moves them
    to each parameter's device. Pass ``None`` to skip the optimizer or scheduler.
    ``load_optimizer``: loads the saved optimizer state instead (FSDP: into this process's shard).
    """
    state = torch.load(Path(ckpt_dir) / TRAINER_STATE, map_location="cpu", weights_only=False)
    return apply_trainer_state(state, optimizer, scheduler, load_optimizer)


def apply_trainer_state(state: dict[str, Any], optimizer: torch.optim.Optimizer | None, scheduler: Any,
                        load_optimizer: Callable[[dict], None] | None = None) -> dict[str, Any]:
    """``load_trainer_state`` for a state already read from disk."""
    if load_optimizer is not None and state["optimizer"] is not None:
        load_optimizer(state["optimizer"])
    elif optimizer is not None and state["optimizer"] is not None:
        optimizer.load_state_dict(state["optimizer"])
    if scheduler is not None and state["scheduler"] is not None:
        scheduler.load_state_dict(state["scheduler"])
    restore_rng_states(state["rng"])
    return {"step": state["step"], "extra": state["extra"]}
