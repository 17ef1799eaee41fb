"""task.answer_format on every answer task, task.rg_config, and task.reward on the built-in tasks.

The prompt must ask for the format the verifier reads: a set format appends its
instruction to each prompt (rg: replaces its own), and scoring reads the answer
where that format puts it.
"""

import itertools

import pytest

from dashrl.cli import main
from dashrl.config import TaskConfig
from dashrl.errors import UserError
from dashrl.rewards.answer import answer_format
from dashrl.tasks import get_task
from dashrl.tasks import reasoning_gym as rg_task


def _one_line_error(capsys, argv) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("dashrl: error: ") and err.count("\n") == 1, err
    return err


def test_testbed_default_format_is_unchanged():
    task = get_task(TaskConfig())
    problem = task.eval_problems(1, 999)[0]
    assert problem.prompt.startswith("Compute ") and "boxed" not in problem.prompt
    assert task.score(f"\\boxed{{{problem.answer}}}", problem).score == 1.0
    assert task.score(f"it is {problem.answer}", problem).reason == "no_box"


def test_testbed_last_number_prompt_and_verifier_agree():
    plain = get_task(TaskConfig()).eval_problems(3, 999)
    task = get_task(TaskConfig(answer_format="last_number"))
    problems = task.eval_problems(3, 999)
    instruction = answer_format("last_number").instruction
    assert [p.prompt for p in problems] == [p.prompt + "\n\n" + instruction for p in plain]
    problem = problems[0]
    assert task.score(f"so it is {problem.answer}.", problem).score == 1.0
    assert task.score(f"\\boxed{{{problem.answer}}} or 99999", problem).reason == "wrong_answer"
    assert task.score("no idea", problem).reason == "no_number"
    # training prompts carry the instruction too, and stay disjoint from evaluation
    train = list(itertools.islice(task.train_stream(1), 50))
    assert all(p.prompt.endswith(instruction) for p in train)
    assert not {p.prompt for p in train} & {p.prompt for p in task.eval_problems(1024, 999)}


def test_regex_format_on_testbed():
    task = get_task(TaskConfig(answer_format="regex:ANSWER=(-?\\d+)"))
    problem = task.eval_problems(1, 999)[0]
    assert problem.prompt == get_task(TaskConfig()).eval_problems(1, 999)[0].prompt  # no instruction to add
    assert task.score(f"ANSWER=0 ANSWER={problem.answer}", problem).score == 1.0
    assert task.score(problem.answer, problem).reason == "no_match"


def test_math_records_with_hash_format(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_text('{"problem": "What is 1/2 + 1/2?", "answer": "1"}\n')
    task = get_task(TaskConfig(name="math", path=str(path), answer_format="hash"))
    problem = task.eval_problems(1, 0)[0]
    assert problem.prompt.endswith("'#### <answer>'.")
    assert task.score("1/2+1/2\n#### 1.0", problem).score == 1.0  # compared as math (1.0 = 1)
    assert task.score("\\boxed{1}", problem).reason == "no_hash"


pytest.importorskip("reasoning_gym")

EASY = {"min_terms": 2, "max_terms": 2, "min_digits": 1, "max_digits": 1}


def test_rg_config_makes_the_dataset_easier():
    task = get_task(TaskConfig(name="rg:chain_sum", eval_size=20, rg_config=EASY))
    for problem in task.eval_problems(20, 999):
        question = problem.prompt.split("\n")[0]
        assert question.count("+") + question.count("-") == 1  # two terms
        assert 0 <= int(problem.answer) <= 18 or -9 <= int(problem.answer) < 0


def test_rg_last_number_replaces_the_tag_instruction():
    task = get_task(TaskConfig(name="rg:chain_sum", eval_size=4, rg_config=EASY, answer_format="last_number"))
    problem = task.eval_problems(1, 999)[0]
    assert rg_task.INSTRUCTION not in problem.prompt
    assert problem.prompt.endswith("\n\n" + answer_format("last_number").instruction)
    assert task.score(f"The final answer is {problem.answer}.", problem).score == 1.0
    assert task.score(f"<answer>{problem.answer}</answer> wait, 1000", problem).score == 0.0
    # the default stays reasoning-gym's tags
    tagged = get_task(TaskConfig(name="rg:chain_sum", eval_size=4, rg_config=EASY))
    assert tagged.eval_problems(1, 999)[0].prompt.endswith(rg_task.INSTRUCTION)


@pytest.mark.parametrize("options, message", [
    ({"min_term": 2}, "task.rg_config: rg:chain_sum has no setting 'min_term' (did you mean 'min_terms'?)"),
    ({"seed": 3}, "has no setting 'seed'"),  # dashrl seeds the dataset itself
    ({"min_terms": 0}, "rejected by rg:chain_sum: min_terms must be positive"),
])
def test_bad_rg_config_is_one_line(options, message, capsys):
    with pytest.raises(UserError) as info:
        get_task(TaskConfig(name="rg:chain_sum", eval_size=4, rg_config=options))
    assert message in str(info.value)
    key = next(iter(options))
    err = _one_line_error(capsys, ["eval", "task.name=rg:chain_sum", f"task.rg_config={{{key}: {options[key]}}}"])
    assert message in err


def test_user_reward_on_builtin_tasks(tmp_path):
    (tmp_path / "rw.py").write_text("def half(completion, problem):\n    return 0.5 if problem.answer in completion else 0.0\n")
    for name, extra in (("testbed", {}), ("rg:chain_sum", {"rg_config": EASY, "eval_size": 4})):
        task = get_task(TaskConfig(name=name, reward=f"{tmp_path / 'rw.py'}:half", **extra))
        problem = task.eval_problems(1, 999)[0]
        assert task.score(f"x {problem.answer}", problem).score == 0.5
        assert task.score("", problem).score == 0.0
