"""Task records with nested fields and list answers (issue 11.8)."""

import pytest

from dashrl.config import TaskConfig
from dashrl.errors import UserError
from dashrl.tasks.base import Problem
from dashrl.tasks.dataset import ExactVerifier, MathVerifier
from dashrl.tasks.math import math_problems
from dashrl.tasks.records import Records, problems_from_records
from dashrl.tasks.registry import get_task


def test_dotted_field_reads_a_nested_object():
    rows = [{"q": {"text": "What is 1+1?", "meta": {"id": "a"}}, "answer": "2"}]
    problem = problems_from_records(Records("f.jsonl", rows), {"prompt": "q.text", "id": "q.meta.id"})[0]
    assert (problem.prompt, problem.id, problem.answer) == ("What is 1+1?", "a", "2")


def test_a_key_with_a_dot_in_its_name_wins_over_the_path():
    rows = [{"q.text": "flat", "q": {"text": "nested"}, "answer": "1"}]
    assert problems_from_records(Records("f", rows), {"prompt": "q.text"})[0].prompt == "flat"


def test_a_missing_dotted_path_is_a_missing_field():
    with pytest.raises(UserError, match="f line 1: missing field 'q.body'"):
        problems_from_records(Records("f", [{"q": {"text": "x"}, "answer": "1"}]), {"prompt": "q.body"})


def test_an_object_value_is_refused_with_a_hint():
    with pytest.raises(UserError, match=r"field 'prompt' is an object \(text\).*task.fields: \{prompt: prompt.text\}"):
        problems_from_records(Records("f", [{"prompt": {"text": "x"}, "answer": "1"}]))


def test_math_records_take_dotted_fields_too():
    rows = [{"problem": {"statement": "Find x."}, "answer": "3"}]
    assert math_problems(rows, "m.jsonl", {"prompt": "problem.statement"})[0].prompt == "Find x."


def test_a_list_answer_means_any_of_them():
    problem = problems_from_records(Records("f", [{"prompt": "p", "answer": ["1/2", "0.5", "half"]}]))[0]
    assert (problem.answer, problem.answers) == ("1/2", ("0.5", "half"))
    exact = ExactVerifier()
    assert exact.score("so \\boxed{half}", problem).score == 1.0
    assert exact.score("so \\boxed{0.5}", problem).score == 1.0
    assert exact.score("so \\boxed{2}", problem).reason == "wrong_answer"
    assert MathVerifier().score("\\boxed{0.5}", problem).score == 1.0
    assert MathVerifier().score("\\boxed{3}", problem).score == 0.0  # before: "1/2\n0.5\nhalf" never matched


def test_jsonl_task_end_to_end_with_nested_prompt_and_list_answers(tmp_path):
    import json

    path = tmp_path / "d.jsonl"
    path.write_text("".join(json.dumps({"q": {"text": f"{i}+1"}, "answer": [str(i + 1), f"{i + 1}.0"]}) + "\n"
                            for i in range(6)))
    task = get_task(TaskConfig(name="jsonl", path=str(path), fields={"prompt": "q.text"}, eval_size=2,
                               verifier="exact"))
    problem = task.eval_problems(1, 0)[0]
    assert problem.prompt.endswith("+1") and task.score(f"\\boxed{{{problem.answers[0]}}}", problem).score == 1.0


def test_problem_answers_default_to_none_extra():
    assert Problem(id="x", prompt="p", answer="1").answers == ()
