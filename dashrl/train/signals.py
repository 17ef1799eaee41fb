"""Graceful stop on SIGTERM, SIGINT and SIGHUP: finish the current step, checkpoint it, then exit.

Inside ``GracefulStop`` the first of these signals only sets ``signum`` (and
prints one line saying so); the training loop looks at it after every step,
saves a checkpoint of the last completed step, writes the summary marked
interrupted and returns. A second signal exits at once (checkpoints are
atomic, so the newest one on disk is still intact).

Exit codes are 128 + the signal number, as a shell reports a signal death:
SIGINT 130, SIGTERM 143, SIGHUP 129. Cluster schedulers send SIGTERM some time
before SIGKILL, and closing a terminal (or an ssh session) sends SIGHUP; both
get the same graceful stop as Ctrl-C.

Handlers can only be installed from the main thread; elsewhere (a training run
started from a worker thread) the context manager does nothing.
"""

from __future__ import annotations

import os
import signal
import threading

SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def exit_code(signum: int) -> int:
    return 128 + signum


class Interrupted(KeyboardInterrupt):
    """A run stopped by a signal, raised by callers that run several (study, bench) so that they stop too."""

    def __init__(self, name: str):
        super().__init__(name)
        self.exit_code = exit_code(signal.Signals[name])


def raise_if_interrupted(summary: dict | None) -> None:
    """After ``train``: a summary marked interrupted stops the caller (its run is saved and resumable)."""
    if summary and summary.get("interrupted"):
        raise Interrupted(summary["interrupted"])


def finished(summary_path) -> bool:
    """A run whose summary.json exists and is not marked interrupted."""
    import json

    try:
        return not json.loads(summary_path.read_text()).get("interrupted")
    except (OSError, ValueError):
        return False


class GracefulStop:
    """``with GracefulStop() as stop: ... if stop.requested: ...``"""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, object] = {}

    @property
    def requested(self) -> bool:
        return self.signum is not None

    @property
    def name(self) -> str | None:
        return signal.Signals(self.signum).name if self.signum is not None else None

    def _handle(self, signum: int, frame) -> None:
        name = signal.Signals(signum).name
        if self.signum is not None:
            os.write(2, f"\ndashrl: {name} again: exiting now; the last checkpoint on disk is intact\n".encode())
            os._exit(exit_code(signum))
        self.signum = signum
        os.write(2, f"\ndashrl: {name} received: stopping after the current step (send it again to exit at once)\n"
                 .encode())

    def __enter__(self) -> "GracefulStop":
        if threading.current_thread() is threading.main_thread():
            for signum in SIGNALS:
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()
