"""What a study run directory holds, shared by the runner (which writes it) and the report (which reads it)."""

from __future__ import annotations

import json
from pathlib import Path

from dashrl.runlog import read_metrics

STUDY_EVAL = "study_eval.json"  # the study's own evaluation of a run's final model
BASE = "base"  # run directory name of the untrained base model's evaluation


def load_run(run_dir: Path) -> dict:
    """What the report reads from one run directory (missing files give None / [])."""
    def read(name: str):
        path = run_dir / name
        return json.loads(path.read_text()) if path.is_file() else None

    return {"summary": read("summary.json"), "study_eval": read(STUDY_EVAL), "rows": read_metrics(run_dir / "metrics.jsonl")}
