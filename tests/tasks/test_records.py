"""Record loading (JSONL, Parquet, hub ids) and user records -> Problems, with one-line errors naming file and line."""

import json

import pytest

from dashrl.errors import UserError
from dashrl.tasks.base import Problem
from dashrl.tasks.records import Records, field_text, load_records, problems_from_records


def _jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_jsonl_rows_in_order_and_trailing_blank_lines_allowed(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text('{"q": "a", "n": 1}\n{"q": "b", "n": [1, 2]}\n\n\n')
    records = load_records(str(path))
    assert records.source == str(path)
    assert records.rows == [{"q": "a", "n": 1}, {"q": "b", "n": [1, 2]}]


def test_parquet_written_here_reads_back(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    path = tmp_path / "d.parquet"
    pq.write_table(pa.table({"prompt": ["1+1", "2+2"], "answer": ["2", "4"]}), path)
    assert load_records(str(path)).rows == [{"prompt": "1+1", "answer": "2"}, {"prompt": "2+2", "answer": "4"}]


@pytest.mark.parametrize("text, message", [
    ('{"a": 1}\n{"a": 2\n', "line 2: not valid JSON"),
    ('{"a": 1}\n[1, 2]\n', "line 2: expected a JSON object, got list"),
    ('{"a": 1}\n\n{"a": 3}\n', "line 2: empty line"),
])
def test_bad_jsonl_names_file_and_line(tmp_path, text, message):
    path = tmp_path / "bad.jsonl"
    path.write_text(text)
    with pytest.raises(UserError) as info:
        load_records(str(path))
    assert str(info.value).startswith(f"{path} {message}")
    assert "\n" not in str(info.value)


def test_missing_and_unsupported_files(tmp_path):
    with pytest.raises(UserError, match="data file not found: .*nope.jsonl"):
        load_records(str(tmp_path / "nope.jsonl"))
    with pytest.raises(UserError, match="data file not found: ./x/y"):
        load_records("./x/y")
    (tmp_path / "d.csv").write_text("a,b\n")
    with pytest.raises(UserError, match=r"unsupported file type '\.csv'"):
        load_records(str(tmp_path / "d.csv"))
    with pytest.raises(UserError, match="is a directory"):
        load_records(str(tmp_path))
    (tmp_path / "broken.parquet").write_bytes(b"not parquet at all")
    with pytest.raises(UserError, match="broken.parquet: not a readable Parquet file"):
        load_records(str(tmp_path / "broken.parquet"))


def test_hub_id_goes_to_datasets_with_split_and_subset(monkeypatch):
    datasets = pytest.importorskip("datasets")
    calls = []

    def fake_load(name, subset, split):
        calls.append((name, subset, split))
        if name == "owner/missing":
            raise FileNotFoundError("Dataset 'owner/missing' doesn't exist on the Hub\nmore detail")
        return datasets.Dataset.from_list([{"question": "q", "answer": "#### 1"}])

    monkeypatch.setattr(datasets, "load_dataset", fake_load)
    records = load_records("openai/gsm8k", "test", "main")
    assert records == Records("openai/gsm8k[test]", [{"question": "q", "answer": "#### 1"}])
    assert calls == [("openai/gsm8k", "main", "test")]
    with pytest.raises(UserError) as info:
        load_records("owner/missing")
    assert str(info.value) == ("could not load hub dataset 'owner/missing' (split train): "
                               "Dataset 'owner/missing' doesn't exist on the Hub")


def test_field_text():
    assert field_text("x") == "x"
    assert field_text(["assert f(1) == 2", "assert f(2) == 3"]) == "assert f(1) == 2\nassert f(2) == 3"
    assert field_text(42) == "42"


def test_problems_from_records_maps_fields_and_defaults_ids():
    records = Records("my.jsonl", [{"question": "Q1", "gold": 7, "uid": "a"}, {"question": "Q2", "gold": "8"}])
    problems = problems_from_records(records, {"prompt": "question", "answer": "gold", "id": "uid"})
    assert problems == [Problem("a", "Q1", "7"), Problem("my.jsonl:2", "Q2", "8")]


def test_problems_from_records_reports_the_mapped_key_and_line():
    records = Records("my.jsonl", [{"question": "Q1", "gold": "1"}, {"question": "Q2", "gold": None}])
    with pytest.raises(UserError) as info:
        problems_from_records(records, {"prompt": "question", "answer": "gold"})
    assert str(info.value) == "my.jsonl line 2: missing field 'gold'"
    # with a reward function only the prompt is required; answer defaults to ""
    assert problems_from_records(records, {"prompt": "question"}, required=("prompt",))[1].answer == ""
