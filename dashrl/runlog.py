"""A run directory: resolved config, metrics.jsonl, summary, optional TensorBoard / W&B.

Layout::

    RUN_DIR/config.yaml      the resolved config
    RUN_DIR/metrics.jsonl    one JSON line per step (and one per evaluation)
    RUN_DIR/samples.jsonl    sample completions every log.samples_every steps (dashrl.train.samples)
    RUN_DIR/checkpoints/     see dashrl.train.checkpoint
    RUN_DIR/summary.json     written at the end

Each row is flushed and fsynced as it is written, and whole-file rewrites
(resume, a re-run final evaluation, the summary) go through a temp file and
``os.replace``, so a kill leaves at most a torn last line (which resume drops).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

from dashrl.config import Config, to_yaml
from dashrl.errors import UserError


def make_row(step: int, metrics: dict) -> dict:
    """A metrics.jsonl row: the step, then every metric (non-finite numbers become null)."""
    return {"step": step, **{k: _clean(v) for k, v in metrics.items() if k != "step"}}


def write_atomic(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` via a fsynced temp file: readers see the old or the new file, never half."""
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class RunLog:
    def __init__(self, run_dir: Path, config: Config, rows: list[dict] | None = None):
        """``rows``: on resume, the reconciled metrics rows (dashrl.train.resume) that replace metrics.jsonl.

        Without ``rows`` a run starts fresh (stale metrics and samples are removed).
        """
        self.dir = run_dir
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            write_atomic(self.dir / "config.yaml", to_yaml(config))
        except OSError as exc:
            raise UserError(f"cannot write the run directory {run_dir}: {exc.strerror or exc}") from None
        self.metrics_path = self.dir / "metrics.jsonl"
        if rows is not None:
            self.rewrite(rows)
            self._drop_samples_after(rows[-1]["step"] if rows else -1)
        else:
            for stale in (self.metrics_path, self.dir / "samples.jsonl"):
                if stale.exists():
                    stale.unlink()
        self._tb = self._wandb = None
        if config.log.tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(str(self.dir / "tensorboard"))
        if config.log.wandb_project:
            import wandb

            self._wandb = wandb.init(project=config.log.wandb_project, dir=str(self.dir), config=config.model_dump(mode="json"))

    def _drop_samples_after(self, step: int) -> None:
        """Resume: samples of steps past the checkpoint (they will be redone) and a torn last line go."""
        path = self.dir / "samples.jsonl"
        if not path.exists():
            return
        kept = []
        for line in path.read_text(errors="replace").splitlines():
            try:
                if json.loads(line)["step"] <= step:
                    kept.append(line)
            except (ValueError, KeyError, TypeError):
                continue
        write_atomic(path, "".join(line + "\n" for line in kept))

    def rewrite(self, rows: list[dict]) -> None:
        write_atomic(self.metrics_path, "".join(json.dumps(r) + "\n" for r in rows))

    def log(self, step: int, metrics: dict) -> None:
        row = make_row(step, metrics)
        with self.metrics_path.open("a") as f:
            f.write(json.dumps(row) + "\n")
            f.flush()
            os.fsync(f.fileno())
        numeric = {k: v for k, v in row.items() if isinstance(v, (int, float)) and k != "step"}
        if self._tb:
            for key, value in numeric.items():
                self._tb.add_scalar(key, value, step)
        if self._wandb:
            self._wandb.log(numeric, step=step)

    def write_samples(self, step: int, rows: list[dict]) -> None:
        """Append a step's sample completions to samples.jsonl (and TensorBoard / W&B as text)."""
        from dashrl.train.samples import as_text, jsonl_lines

        if not rows:
            return
        with (self.dir / "samples.jsonl").open("a") as f:
            f.write(jsonl_lines(step, rows))
        if self._tb:
            self._tb.add_text("samples", as_text(step, rows), step)
        if self._wandb:
            import wandb

            columns = ["step", "prompt", "completion", "reward", "advantage", "reason", "extracted", "answer"]
            table = wandb.Table(columns=columns, data=[[step, *(r.get(c) for c in columns[1:])] for r in rows])
            self._wandb.log({"samples": table}, step=step)

    def read_metrics(self) -> list[dict]:
        return read_metrics(self.metrics_path)

    def write_summary(self, summary: dict) -> None:
        write_atomic(self.dir / "summary.json", json.dumps(summary, indent=2) + "\n")

    def close(self) -> None:
        if self._tb:
            self._tb.close()
        if self._wandb:
            self._wandb.finish()


def read_metrics(path: Path) -> list[dict]:
    """The rows of a metrics.jsonl file ([] if it does not exist)."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line]


def _clean(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
