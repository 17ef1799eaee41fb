"""Run-directory safety: where a run may write, checked before anything is written.

- A new run refuses an existing run directory (one holding config.yaml,
  metrics.jsonl, summary.json or checkpoints/): two runs mixed in one directory
  would corrupt a later resume. ``--resume`` continues it; ``--overwrite``
  clears it first (only a directory that looks like a run is ever cleared).
- The directory must be creatable and writable: a path under a regular file,
  on a read-only or pseudo file system such as /proc, or without permission is
  a one-line ``UserError``. The probe creates and removes one temporary
  directory in the nearest existing ancestor, so a refused path leaves nothing.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from dashrl.errors import UserError

RUN_FILES = ("config.yaml", "metrics.jsonl", "summary.json", "checkpoints")
_PSEUDO_FS = ("/proc", "/sys", "/dev")


def is_run_dir(path: Path) -> bool:
    return path.is_dir() and any((path / name).exists() for name in RUN_FILES)


def check_writable(path: Path, what: str = "log.run_dir") -> None:
    """Raise UserError unless ``path`` is (or can be created as) a writable directory."""
    path = Path(path).expanduser()
    resolved = Path(os.path.abspath(path))
    for pseudo in map(Path, _PSEUDO_FS):
        if resolved == pseudo or pseudo in resolved.parents:
            raise UserError(f"{what} {path} is under {pseudo}, a kernel file system, not storage; "
                            "choose a directory on disk")
    ancestor = resolved
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise UserError(f"{what} {path}: {ancestor} is a file, not a directory")
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".dashrl-probe-", dir=ancestor))
    except OSError as exc:
        raise UserError(f"{what} {path}: cannot write in {ancestor} ({exc.strerror or exc})") from None


def check_run_dir(path: Path, resume: bool = False, overwrite: bool = False) -> None:
    """A new run's directory: writable, and not an earlier run's unless ``overwrite``; raises UserError."""
    path = Path(path)
    check_writable(path)
    if resume:
        return
    if is_run_dir(path) and not overwrite:
        raise UserError(f"run directory {path} already holds a run; continue it with --resume {path}, "
                        "start over with --overwrite, or choose another log.run_dir")
    if overwrite and path.is_dir() and any(path.iterdir()) and not is_run_dir(path):
        raise UserError(f"--overwrite: {path} is not a dashrl run directory (no config.yaml, metrics.jsonl, "
                        "checkpoints/); refusing to clear it")


def clear_run_dir(path: Path) -> None:
    """Delete an earlier run's files (``--overwrite``), after everything else was checked."""
    path = Path(path)
    if not is_run_dir(path):
        return
    for entry in path.iterdir():
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()
