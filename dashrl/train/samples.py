"""Sample completions for people to read: a few prompts of a step, each with its whole group.

The trainer keeps the last step's completions as text (``Trainer.records``:
prompt as sent, completion, total reward and each reward term, advantage,
the verifier's reason, extracted answer and reference). Every
``log.samples_every`` steps (and after step 1) the run writes the first
``prompts`` groups to ``RUN_DIR/samples.jsonl`` (one line per completion,
with its step) and, when TensorBoard or W&B is on, as text there too
(``dashrl.runlog.RunLog.write_samples``).
"""

from __future__ import annotations

import json

SAMPLE_PROMPTS = 2  # groups written per sampled step


def select_samples(records: list[dict], group_size: int, prompts: int = SAMPLE_PROMPTS) -> list[dict]:
    """The first ``prompts`` whole groups of a step's records (records are grouped, G per prompt)."""
    return records[: prompts * group_size]


def step_samples(records: list[dict], group_size: int, gather=None) -> list[dict]:
    """``select_samples`` over every process's records (``gather``: a list's concatenation over processes)."""
    mine = select_samples(records, group_size)
    return select_samples(gather(mine), group_size) if gather is not None else mine


def as_text(step: int, rows: list[dict]) -> str:
    """Markdown for TensorBoard / W&B: each prompt once, then its completions with reward and advantage."""
    lines, last_prompt = [f"### step {step}"], None
    for row in rows:
        if row["prompt"] != last_prompt:
            last_prompt = row["prompt"]
            lines += ["", f"**prompt** ({row['id']}, answer {row.get('answer')!r}):", "", _block(row["prompt"])]
        lines += [f"- reward {row['reward']:.2f}, advantage {row['advantage']:+.2f}, {row['reason']}, "
                  f"extracted {row.get('extracted')!r}:", _block(row["completion"])]
    return "\n".join(lines)


def _block(text: str) -> str:
    return "\n".join("    " + line for line in (text or "(empty)").splitlines() or [""])


def jsonl_lines(step: int, rows: list[dict]) -> str:
    return "".join(json.dumps({"step": step, **row}) + "\n" for row in rows)
