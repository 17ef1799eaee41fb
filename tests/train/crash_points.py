"""Kill a training run at a chosen point: used by the crash tests (tests/train/test_reliability.py).

``install(point, n, die)`` wraps the function at ``point`` so that its ``n``-th
call ``die``s there. In-process tests die by raising ``Killed`` (a
BaseException nothing in dashrl catches); the subprocess runner below dies by
SIGKILL, exactly as a killed process would:

    python -m tests.train.crash_points POINT N dashrl-train-args...

Points:
    during_step        inside the n-th training step, after its update, before anything is saved
    before_checkpoint  as the n-th checkpoint starts
    mid_checkpoint     while the n-th checkpoint's trainer state is half written
    after_checkpoint   after the n-th checkpoint is published, before that step's metrics row
    mid_row            halfway through writing the n-th metrics row (a torn line)
    after_row          after the n-th metrics row
    during_eval        inside the n-th evaluation (the last one is the final evaluation)
    before_summary     before summary.json is written
"""

from __future__ import annotations

import json
import os
import signal
import sys
from typing import Callable

POINTS = ("during_step", "before_checkpoint", "mid_checkpoint", "after_checkpoint", "mid_row", "after_row",
          "during_eval", "before_summary")


class Killed(BaseException):
    """An in-process stand-in for SIGKILL: unwinds without any handler running dashrl code."""


def raise_killed() -> None:
    raise Killed()


def sigkill() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def install(point: str, n: int, die: Callable[[], None], patch=None) -> None:
    """Make the ``n``-th call at ``point`` die. ``patch(obj, name, value)`` defaults to setattr."""
    import torch

    import dashrl.train.checkpoint as checkpoint
    import dashrl.train.run as run
    from dashrl.runlog import RunLog
    from dashrl.train.trainer import Trainer

    patch = patch or setattr
    calls = [0]

    def counted(real, before=False, after=False):
        def wrapper(*args, **kwargs):
            calls[0] += 1
            hit = calls[0] == n
            if hit and before:
                die()
            result = real(*args, **kwargs)
            if hit and after:
                die()
            return result
        return wrapper

    if point == "during_step":
        patch(Trainer, "train_step", counted(Trainer.train_step, after=True))
    elif point == "before_checkpoint":
        patch(run, "save_checkpoint", counted(run.save_checkpoint, before=True))
    elif point == "after_checkpoint":
        patch(run, "save_checkpoint", counted(run.save_checkpoint, after=True))
    elif point == "mid_checkpoint":
        real_save = torch.save

        def half_save(obj, path, *args, **kwargs):
            if str(path).endswith("trainer_state.pt"):
                calls[0] += 1
                if calls[0] == n:
                    real_save(obj, path, *args, **kwargs)
                    with open(path, "r+b") as f:
                        f.truncate(os.path.getsize(path) // 2)
                    die()
            return real_save(obj, path, *args, **kwargs)

        patch(checkpoint.torch, "save", half_save)
    elif point in ("mid_row", "after_row"):
        real_log = RunLog.log

        def log(self, step, metrics):
            calls[0] += 1
            if calls[0] == n and point == "mid_row":
                from dashrl.runlog import make_row

                line = json.dumps(make_row(step, metrics)) + "\n"
                with self.metrics_path.open("a") as f:
                    f.write(line[: len(line) // 2])
                die()
            real_log(self, step, metrics)
            if calls[0] == n:
                die()

        patch(RunLog, "log", log)
    elif point == "during_eval":
        patch(run, "_eval", counted(run._eval, after=True))
    elif point == "before_summary":
        patch(RunLog, "write_summary", counted(RunLog.write_summary, before=True))
    else:
        raise ValueError(f"unknown point {point!r}; known: {', '.join(POINTS)}")


if __name__ == "__main__":
    point, n, argv = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
    install(point, n, sigkill)
    from dashrl.cli import main

    sys.exit(main(argv))
