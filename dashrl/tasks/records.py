"""Task records: a JSONL or Parquet file, or a Hugging Face hub dataset, read as a list of dicts.

Every problem source (benchmarks, user files) starts here; converters then
turn records into Problems. Numbering is shared: record i sits on line i + 1
of a JSONL file (row i + 1 of a Parquet file or hub split), so a converter
reports "FILE line N: missing field 'x'" with N = i + 1. That is why a JSONL
file may end in blank lines but not contain one.

Simplifications: files are read whole into memory (benchmark-sized data); a
local path must end in .jsonl or .parquet; anything else that does not exist
locally and looks like ``owner/name`` (or a bare name) is taken as a hub id.
Hub loading goes through ``datasets.load_dataset`` (network and cache are the
library's); only the requested split is kept.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from dashrl.errors import UserError
from dashrl.tasks.base import Problem

FILE_SUFFIXES = (".jsonl", ".parquet")
PROBLEM_FIELDS = ("id", "prompt", "answer", "solution", "tests")


@dataclass(frozen=True)
class Records:
    """Rows of one source. ``source`` names it in messages and ids: the path, or ``hub_id[split]``."""

    source: str
    rows: list[dict]


def load_records(path: str, split: str = "train", subset: str | None = None) -> Records:
    """Records from a local .jsonl / .parquet file or a hub dataset id; raises UserError."""
    local = Path(path).expanduser()
    if local.is_dir():
        raise UserError(f"{path} is a directory; give a .jsonl or .parquet file or a hub dataset id")
    if local.is_file():
        if local.suffix == ".jsonl":
            return Records(path, read_jsonl(local, path))
        if local.suffix == ".parquet":
            return Records(path, read_parquet(local, path))
        raise UserError(f"{path}: unsupported file type '{local.suffix}' (use .jsonl or .parquet)")
    if looks_local(path):
        raise UserError(f"data file not found: {path}")
    return Records(f"{path}[{split}]", read_hub(path, split, subset))


def looks_local(path: str) -> bool:
    """True when ``path`` names a local file (by suffix or shape), not a hub id."""
    return path.endswith(FILE_SUFFIXES) or path.startswith((".", "/", "~")) or path.count("/") > 1


def read_jsonl(path: Path, name: str) -> list[dict]:
    """One JSON object per line; trailing blank lines are allowed, inner ones are not."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError:
        raise UserError(f"{name}: not UTF-8 text") from None
    while lines and not lines[-1].strip():
        lines.pop()
    rows = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            raise UserError(f"{name} line {number}: empty line (JSONL needs one JSON object per line)")
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            raise UserError(f"{name} line {number}: not valid JSON") from None
        if not isinstance(row, dict):
            raise UserError(f"{name} line {number}: expected a JSON object, got {type(row).__name__}")
        rows.append(row)
    return rows


def read_parquet(path: Path, name: str) -> list[dict]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise UserError("reading Parquet needs pyarrow: pip install 'dashrl[tasks]'") from None
    try:
        return pq.read_table(path).to_pylist()
    except Exception as exc:  # pyarrow raises several types for damaged files
        raise UserError(f"{name}: not a readable Parquet file ({first_line(exc)})") from None


def read_hub(dataset_id: str, split: str, subset: str | None) -> list[dict]:
    try:
        import datasets
    except ImportError:
        raise UserError(f"loading hub dataset '{dataset_id}' needs the datasets package: "
                        "pip install 'dashrl[tasks]'") from None
    try:
        return datasets.load_dataset(dataset_id, subset, split=split).to_list()
    except Exception as exc:  # network, missing dataset/split/config: all user-fixable
        raise UserError(f"could not load hub dataset '{dataset_id}' (split {split}): {first_line(exc)}") from None


def first_line(exc: Exception) -> str:
    """An exception's message cut to one line (its type name when empty)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


# ------------------------------------------------------------- records -> problems


def record_value(row: Mapping[str, Any], key: str) -> Any:
    """``row[key]``; a dotted key (``q.text``) that is not itself a key reads nested objects. None if absent."""
    if key in row or "." not in key:
        return row.get(key)
    value: Any = row
    for part in key.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return None
        value = value[part]
    return value


def field_text(value: Any, where: str = "record", key: str = "field") -> str:
    """A record value as Problem text: strings as they are, lists of strings one per line, numbers via str().

    A mapping is an error (its repr is not a prompt): name the text inside it with a dotted key.
    """
    if isinstance(value, Mapping):
        inner = next((k for k, v in value.items() if isinstance(v, str)), None)
        hint = f", e.g. task.fields: {{prompt: {key}.{inner}}}" if inner else ""
        raise UserError(f"{where}: field '{key}' is an object ({', '.join(map(str, list(value)[:4]))}), not text; "
                        f"name the text inside it with a dotted key{hint}")
    if isinstance(value, str):
        return value
    if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        return "\n".join(value)
    return str(value)


def answer_texts(value: Any, where: str, key: str) -> tuple[str, ...]:
    """A record's answer as accepted answers: a list means any of them is correct (at least one)."""
    if isinstance(value, (list, tuple)):
        answers = tuple(field_text(v, where, key) for v in value)
        if not answers:
            raise UserError(f"{where}: field '{key}' is an empty list; give at least one answer")
        return answers
    return (field_text(value, where, key),)


def problems_from_records(records: Records, fields: Mapping[str, str] | None = None,
                          required: Sequence[str] = ("prompt", "answer")) -> list[Problem]:
    """Problems from user records: ``fields`` maps Problem fields to record keys (default: same name).

    ``required`` Problem fields must be present and not null in every record;
    ``answer`` defaults to "" and ``id`` to "SOURCE:LINE" when absent.
    """
    keys = {name: name for name in PROBLEM_FIELDS} | dict(fields or {})
    problems = []
    for number, row in enumerate(records.rows, 1):
        where = f"{records.source} line {number}"
        for name in required:
            if record_value(row, keys[name]) is None:
                raise UserError(f"{where}: missing field '{keys[name]}'")

        def get(name: str) -> str | None:
            value = record_value(row, keys[name])
            return None if value is None else field_text(value, where, keys[name])

        raw_answer = record_value(row, keys["answer"])
        answers = answer_texts(raw_answer, where, keys["answer"]) if raw_answer is not None else ("",)
        problems.append(Problem(id=get("id") or f"{records.source}:{number}", prompt=get("prompt") or "",
                                answer=answers[0], solution=get("solution"), tests=get("tests"),
                                answers=answers[1:]))
    return problems
