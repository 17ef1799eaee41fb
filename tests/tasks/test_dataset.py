"""DatasetTask (seeded epochs, fixed eval list, delegated scoring), holdout splits, verifiers, user rewards."""

import itertools
import sys

import pytest

from dashrl.errors import UserError
from dashrl.rewards.result import RewardResult
from dashrl.tasks.base import Problem, score_all
from dashrl.tasks.dataset import (DatasetTask, ExactVerifier, FunctionVerifier, MathVerifier, holdout_split,
                                  load_function, without_prompts)

PROBLEMS = [Problem(f"p{i}", f"question {i}", str(i)) for i in range(10)]


def _ids(stream, n):
    return [p.id for p in itertools.islice(stream, n)]


def test_train_stream_is_seeded_and_every_epoch_covers_the_list_once():
    task = DatasetTask("t", PROBLEMS[:4], PROBLEMS[4:], MathVerifier())
    first = _ids(task.train_stream(seed=3), 12)
    assert first == _ids(task.train_stream(seed=3), 12)  # same seed, same order
    for epoch in range(3):  # 4 problems per epoch, each exactly once
        assert sorted(first[4 * epoch : 4 * epoch + 4]) == ["p0", "p1", "p2", "p3"]
    assert first[:4] != first[4:8] or first[4:8] != first[8:12]  # epochs are reshuffled
    assert _ids(task.train_stream(seed=4), 12) != first


def test_eval_problems_are_the_first_n_or_all():
    task = DatasetTask("t", PROBLEMS[:4], PROBLEMS[4:], MathVerifier())
    assert task.eval_problems(2, seed=0) == PROBLEMS[4:6] == task.eval_problems(2, seed=5)
    assert task.eval_problems(100, seed=0) == PROBLEMS[4:]  # 6 problems: all of them


def test_no_training_problems_fails_when_the_stream_is_asked_for():
    task = DatasetTask("math", [], PROBLEMS, MathVerifier())
    with pytest.raises(UserError, match="task 'math' has no training problems: all 10 are held out"):
        task.train_stream(seed=0)


def test_holdout_split_is_seeded_disjoint_and_keeps_source_order():
    train, held_out = holdout_split(PROBLEMS, 3, seed=7)
    assert len(train) == 7 and len(held_out) == 3
    assert {p.id for p in train} | {p.id for p in held_out} == {p.id for p in PROBLEMS}
    assert not {p.prompt for p in train} & {p.prompt for p in held_out}
    assert held_out == sorted(held_out, key=PROBLEMS.index)
    assert holdout_split(PROBLEMS, 3, seed=7) == (train, held_out)
    assert holdout_split(PROBLEMS, 3, seed=8)[1] != held_out
    assert holdout_split(PROBLEMS, 10, seed=7) == ([], PROBLEMS)  # a small file goes wholly to evaluation


def test_duplicated_prompts_never_reach_training():
    duplicate = Problem("dup", PROBLEMS[0].prompt, "0")
    assert without_prompts([*PROBLEMS[:3], duplicate], [PROBLEMS[0]]) == PROBLEMS[1:3]


def test_verifiers():
    problem = Problem("p", "q", "\\frac{1}{2}")
    assert MathVerifier().score("so \\boxed{0.5}", problem).score == 1.0  # numerically equal
    assert ExactVerifier().score("so \\boxed{0.5}", problem) == RewardResult(0.0, "wrong_answer", "0.5")
    assert ExactVerifier().score("so \\boxed{ \\frac{1}{2} }", problem).score == 1.0
    assert ExactVerifier().score("no box", problem).reason == "no_box"


class _BatchVerifier:
    def __init__(self):
        self.calls = []

    def score(self, completion, problem):
        raise AssertionError("the batch path should be used")

    def score_batch(self, completions, problems):
        self.calls.append(len(completions))
        return [RewardResult(float(c == p.answer), "x") for c, p in zip(completions, problems)]


def test_scoring_uses_the_verifiers_batch_path_when_it_has_one():
    verifier = _BatchVerifier()
    task = DatasetTask("t", PROBLEMS, [], verifier)
    results = score_all(task, ["0", "7", "2"], PROBLEMS[:3])
    assert [r.score for r in results] == [1.0, 0.0, 1.0] and verifier.calls == [3]
    plain = DatasetTask("t", PROBLEMS, [], MathVerifier())
    assert [r.score for r in score_all(plain, ["\\boxed{0}", "\\boxed{7}"], PROBLEMS[:2])] == [1.0, 0.0]


def test_function_verifier_turns_numbers_into_results_and_rejects_other_types():
    problem = PROBLEMS[3]
    as_float = FunctionVerifier(lambda c, p: 0.25 * len(c), "m:f")
    assert as_float.score("ab", problem) == RewardResult(0.5, "user_reward")
    assert FunctionVerifier(lambda c, p: RewardResult(1.0, "mine"), "m:g").score("", problem).reason == "mine"
    with pytest.raises(UserError, match="task.reward m:h returned str; expected RewardResult or float"):
        FunctionVerifier(lambda c, p: "yes", "m:h").check(problem)
    with pytest.raises(UserError, match="task.reward m:i failed on an empty completion: ZeroDivisionError"):
        FunctionVerifier(lambda c, p: 1 / len(c), "m:i").check(problem)


def test_load_function_from_a_module_on_the_path_and_from_a_file(tmp_path, monkeypatch):
    (tmp_path / "my_rewards_mod.py").write_text("def length(completion, problem):\n    return len(completion)\n"
                                                "NOT_CALLABLE = 3\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "my_rewards_mod", raising=False)
    assert load_function("my_rewards_mod:length")("abc", PROBLEMS[0]) == 3
    assert load_function(f"{tmp_path / 'my_rewards_mod.py'}:length")("ab", PROBLEMS[0]) == 2


@pytest.mark.parametrize("ref, message", [
    ("no_such_module_xyz:f", "no module named 'no_such_module_xyz'"),
    ("my_rewards_bad:missing", "my_rewards_bad has no attribute 'missing'"),
    ("my_rewards_bad:NOT_CALLABLE", "my_rewards_bad.NOT_CALLABLE is not callable"),
    ("my_rewards_broken:f", "importing my_rewards_broken failed: ZeroDivisionError"),
    ("nowhere/r.py:f", "file not found: nowhere/r.py"),
])
def test_bad_reward_references_give_one_line(tmp_path, monkeypatch, ref, message):
    (tmp_path / "my_rewards_bad.py").write_text("NOT_CALLABLE = 3\n")
    (tmp_path / "my_rewards_broken.py").write_text("x = 1 / 0\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(UserError) as info:
        load_function(ref)
    assert str(info.value).startswith(f"task.reward '{ref}': ")
    assert message in str(info.value) and "\n" not in str(info.value)
