"""The testbed's two solution styles and the split between the pretraining corpus and the task's problems."""

import itertools
import random

from dashrl.rewards.math import score_math
from dashrl.tasks.testbed import ArithmeticTask, in_pretraining_half
from dashrl.testbed.arithmetic import MULTIPLY_SIGNS, generate, human_solution, step_solution


def test_step_solution_rewrites_one_operation_per_line():
    # 7+8*3-5: the product first, then left to right
    assert step_solution([7, "*", 3, "+", 8]) == "7*3+8\n=21+8\n=29\n\\boxed{29}"
    assert step_solution([7, "+", 8, "*", 3, "-", 5]) == "7+8*3-5\n=7+24-5\n=31-5\n=26\n\\boxed{26}"


def test_human_solution_is_right_concise_and_varied():
    problems = generate(2000, seed=5)  # style "human", the task's reference solutions
    steps = generate(2000, seed=5, style="steps")
    assert [p.prompt for p in problems] == [p.prompt for p in steps]  # the style does not change the problems
    assert all(score_math(p.solution, p.answer, symbolic=False).score == 1.0 for p in problems)
    # concise: shorter on average than the step-by-step text, and it skips lines
    assert sum(map(len, (p.solution for p in problems))) < 0.95 * sum(map(len, (p.solution for p in steps)))
    assert sum(p.solution.count("=") for p in problems) < sum(p.solution.count("=") for p in steps)
    # varied notation: every multiplication sign, spaced and unspaced, bare and $-wrapped boxes, answer-only ones
    texts = [p.solution for p in problems]
    for sign in MULTIPLY_SIGNS[1:]:
        assert any(sign in t for t in texts), sign
    assert any(" + " in t for t in texts) and any("$\\boxed" in t for t in texts)
    assert any(t.startswith("\\boxed") for t in texts)
    # a problem's reference solution is fixed: the same prompt gives the same text whatever the stream seed
    other = {p.prompt: p.solution for p in generate(2000, seed=6)}
    common = [p for p in problems if p.prompt in other]
    assert len(common) > 100 and all(other[p.prompt] == p.solution for p in common)


def test_human_solution_skips_steps_but_ends_in_the_answer():
    tokens = [9, "-", 1, "-", 6, "+", 7]  # 9-1-6+7 = 8-6+7 = 2+7 = 9
    texts = {human_solution(tokens, random.Random(seed)) for seed in range(200)}
    assert all(t.endswith(("\\boxed{9}", "$\\boxed{9}$")) for t in texts)
    assert "\\boxed{9}" in texts  # every step done in the head
    assert any("8-6+7" in t.replace(" ", "") and "2+7" not in t.replace(" ", "") for t in texts)  # one line skipped


def test_pretraining_corpus_and_training_problems_are_disjoint_halves():
    task = ArithmeticTask()
    pretrain = list(itertools.islice(task.pretrain_stream(7919), 3000))
    train = list(itertools.islice(task.train_stream(1), 3000))
    assert not {p.prompt for p in pretrain} & {p.prompt for p in train}
    assert all(in_pretraining_half(p.prompt) for p in pretrain) and not any(in_pretraining_half(p.prompt) for p in train)
    # the corpus is step by step, the task's reference solutions are the human-written ones
    assert all(p.solution == step_solution_of(p.prompt) for p in pretrain[:50])
    assert any(p.solution != step_solution_of(p.prompt) for p in train[:50])
    # the held-out problems come from both halves and from neither stream
    held = task.eval_problems(1024, 999)
    assert 0.4 < sum(in_pretraining_half(p.prompt) for p in held) / len(held) < 0.6
    assert not {p.prompt for p in held} & ({p.prompt for p in pretrain} | {p.prompt for p in train})


def step_solution_of(prompt: str) -> str:
    expression = prompt.removeprefix("Compute ").removesuffix(".\n")
    tokens, number = [], ""
    for ch in expression:
        if ch.isdigit():
            number += ch
        else:
            tokens += [int(number), ch]
            number = ""
    return step_solution(tokens + [int(number)])


def test_whole_space_corpus_covers_both_halves_step_by_step_and_skips_held_out():
    task = ArithmeticTask()
    whole = list(itertools.islice(task.pretrain_stream(7919, half=False), 2000))
    share = sum(in_pretraining_half(p.prompt) for p in whole) / len(whole)
    assert 0.4 < share < 0.6  # both halves: the default base also sees the task's problems (in its own style)
    assert all(p.solution == step_solution_of(p.prompt) for p in whole[:50])
    assert not {p.prompt for p in whole} & {p.prompt for p in task.eval_problems(1024, 999)}


def test_testbed_and_testbed_study_resolve_to_the_whole_and_half_corpus_bases(monkeypatch):
    from dashrl.models import resolve_model_path
    from dashrl.testbed import pretrain

    built = []
    monkeypatch.setattr(pretrain, "ensure_base_checkpoint", lambda spec, progress=True: built.append(spec) or "x")
    resolve_model_path("testbed", progress=False)
    resolve_model_path("testbed-study", progress=False)
    assert [s.corpus for s in built] == ["whole", "half"] and pretrain.TEACHER.corpus == "half"
    assert pretrain.base_checkpoint_dir(built[0]) != pretrain.base_checkpoint_dir(built[1])
