"""rg: tasks: the package's scorer on the <answer> block (binary), seeded disjoint train/eval, solutions."""

import itertools
import re

import pytest

from dashrl.config import TaskConfig
from dashrl.errors import UserError
from dashrl.rewards.result import RewardResult
from dashrl.tasks import get_task
from dashrl.tasks import reasoning_gym as rg_task
from dashrl.tasks.base import score_all

pytest.importorskip("reasoning_gym")


def _task(name="rg:basic_arithmetic", eval_size=20):
    return get_task(TaskConfig(name=name, eval_size=eval_size))


def test_correct_answer_scores_1_wrong_0_untagged_0():
    task = _task()
    problem = task.eval_problems(1, seed=999)[0]
    assert problem.prompt.endswith(rg_task.INSTRUCTION) and problem.answer
    good = f"Let me compute.\n<answer>{problem.answer}</answer>"
    wrong = f"<answer>{int(problem.answer) + 1}</answer>"
    results = score_all(task, [good, wrong, problem.answer], [problem] * 3)
    assert [(r.score, r.reason) for r in results] == [(1.0, "correct"), (0.0, "wrong_answer"), (0.0, "no_answer")]
    # the reference solution carries the tagged answer, so it scores 1
    assert task.score(problem.solution, problem).score == 1.0


def test_countdown_partial_credit_from_the_package_becomes_0():
    task = _task("rg:countdown", eval_size=2)
    problem = task.eval_problems(1, seed=999)[0]
    assert task.score(f"<answer>{problem.answer}</answer>", problem).score == 1.0
    # the same numbers, all added: a valid expression with the wrong value gets 0.05 from reasoning-gym, 0 here
    wrong = re.sub(r"[-*/]", "+", problem.answer)
    assert wrong != problem.answer
    assert task.score(f"<answer>{wrong}</answer>", problem) == RewardResult(0.0, "wrong_answer", wrong)


def test_train_stream_is_seeded_and_disjoint_from_eval():
    task = _task(eval_size=50)
    eval_prompts = {p.prompt for p in task.eval_problems(50, seed=999)}
    first = list(itertools.islice(task.train_stream(seed=1), 200))
    assert not eval_prompts & {p.prompt for p in first}
    assert [p.prompt for p in first[:20]] == [p.prompt for p in itertools.islice(task.train_stream(seed=1), 20)]
    assert first[0].prompt != next(task.train_stream(seed=2)).prompt


def test_training_items_equal_to_eval_items_are_skipped(monkeypatch):
    # one seed for train and eval: train item i is eval item i, so items 0..4 must all be skipped
    monkeypatch.setattr(rg_task, "dataset_seed", lambda kind, seed, chunk=0: 12345)
    task = _task(eval_size=5)
    first = next(task.train_stream(seed=1))
    assert first.id == "rg:basic_arithmetic/train/1/0/5"


def test_a_problem_is_scored_by_another_task_instance_from_its_id():
    problem = next(_task().train_stream(seed=3))
    fresh = _task()  # never produced the problem: regenerates its item from the id
    assert fresh.score(f"<answer>{problem.answer}</answer>", problem).score == 1.0


def test_gsm_symbolic_solution_is_the_worked_answer_then_the_tag():
    problem = _task("rg:gsm_symbolic", eval_size=1).eval_problems(1, seed=999)[0]
    assert problem.solution.endswith(f"\n<answer>{problem.answer}</answer>")
    assert len(problem.solution) > len(f"<answer>{problem.answer}</answer>") + 20  # reasoning before it


def test_unknown_dataset_suggests_the_closest():
    with pytest.raises(UserError, match=r"unknown reasoning-gym dataset 'countdwn' \(did you mean 'rg:countdown'\?\)"):
        _task("rg:countdwn")
