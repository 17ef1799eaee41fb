"""Resume: choose an intact checkpoint and reconcile metrics.jsonl with it, before anything is written.

A run killed at any moment leaves a consistent pair behind:

- Checkpoints are atomic (``dashrl.train.checkpoint``), but a file can still be
  damaged later (a truncated copy, a full disk). ``intact_checkpoint`` tries
  them newest first and falls back to the newest one whose trainer state and
  model load, with a warning naming the damaged one.
- Each checkpoint carries the metrics row of its own step (``extra["row"]``),
  so a kill between publishing the checkpoint and appending that row loses
  nothing: ``reconcile_metrics`` restores it. Rows past the checkpoint are
  dropped (those steps are redone), a torn last line (a kill mid-write) is
  dropped with a warning, and a missing row before the checkpoint is an error
  (the log is not this checkpoint's).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Callable

import torch
from safetensors import SafetensorError

from dashrl.errors import UserError
from dashrl.train.checkpoint import CHECKPOINTS, TRAINER_STATE, _is_complete, _step_dirs, latest_checkpoint

STATE_KEYS = ("step", "extra", "optimizer", "scheduler", "rng")


class DamagedCheckpoint(UserError):
    """A checkpoint file is truncated, empty or unreadable (not a settings mismatch, which is the user's to fix)."""


def load_checkpoint_model(load: Callable[[Path], Any]) -> Callable[[Path], Any]:
    """``load`` with its damage errors (unreadable or truncated files) turned into DamagedCheckpoint."""
    def guarded(ckpt: Path) -> Any:
        try:
            return load(ckpt)
        except UserError as exc:
            if str(exc).startswith("could not load"):
                raise DamagedCheckpoint(str(exc)) from None
            raise
        except (OSError, ValueError, RuntimeError, SafetensorError) as exc:  # a truncated adapter file or its JSON
            text = str(exc).strip()
            raise DamagedCheckpoint(f"{type(exc).__name__}: {text.splitlines()[0] if text else 'unreadable'}") from None
    return guarded


def warn(message: str) -> None:
    print(f"dashrl: warning: {message}", file=sys.stderr, flush=True)


def read_trainer_state(ckpt: Path) -> dict[str, Any]:
    """The checkpoint's trainer state; raises UserError when it is missing, truncated or not ours."""
    path = ckpt / TRAINER_STATE
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # truncated zip, empty file, unpickling errors: all mean "damaged"
        raise DamagedCheckpoint(f"{path} is damaged ({type(exc).__name__})") from None
    if not isinstance(state, dict) or any(key not in state for key in STATE_KEYS):
        raise DamagedCheckpoint(f"{path} is not a dashrl trainer state")
    return state


def intact_checkpoint(run_dir: Path, load_model: Callable[[Path], Any]) -> tuple[Path, Any, dict] | None:
    """(checkpoint, what ``load_model`` returned, its trainer state) for the newest checkpoint that loads.

    Warns for each checkpoint skipped."""
    root = Path(run_dir) / CHECKPOINTS
    newest = latest_checkpoint(run_dir)
    candidates = [path for _, path in reversed(_step_dirs(root)) if _is_complete(path)]
    if newest is not None and newest in candidates:  # 'latest' first, then by step, newest first
        candidates.remove(newest)
        candidates.insert(0, newest)
    for i, ckpt in enumerate(candidates):
        try:
            state = read_trainer_state(ckpt)
            return ckpt, load_checkpoint_model(load_model)(ckpt), state
        except DamagedCheckpoint as exc:
            fallback = f"falling back to {candidates[i + 1].name}" if i + 1 < len(candidates) else "none left"
            warn(f"checkpoint {ckpt.name} cannot be used: {exc}; {fallback}")
    return None


def read_metrics_rows(path: Path) -> list[dict]:
    """The rows of metrics.jsonl; a torn last line is dropped with a warning, a bad inner line is an error."""
    if not path.exists():
        return []
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot read {path}: {exc}") from None
    lines = text.split("\n")
    rows = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            if not isinstance(row, dict) or not isinstance(row.get("step"), int):
                raise ValueError("no step")
        except ValueError:
            if all(not rest.strip() for rest in lines[number:]):  # the last line: a write cut short by a kill
                warn(f"{path} line {number} is incomplete (the run was killed while writing it); dropped")
                break
            raise UserError(f"{path} line {number} is not a metrics row; the log is damaged") from None
        rows.append(row)
    return rows


def reconcile_metrics(path: Path, step: int, row: dict | None) -> list[dict]:
    """The rows that belong to a checkpoint at ``step``: rows 0..step, one each, restoring ``row`` if missing."""
    rows = [r for r in read_metrics_rows(path) if r["step"] <= step]
    by_step: dict[int, dict] = {}
    for r in rows:
        by_step[r["step"]] = r  # a step logged twice (an older resume) keeps its last row
    if step not in by_step and row is not None:
        by_step[step] = row
    missing = [s for s in range(step + 1) if s not in by_step]
    if missing:
        raise UserError(f"cannot resume: {path} has no row for step {missing[0]}, but the checkpoint is at step "
                        f"{step}; the log does not belong to this checkpoint")
    return [by_step[s] for s in range(step + 1)]
