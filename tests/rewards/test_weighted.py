"""Weighted training rewards: sums by hand, user terms, and each term logged by the trainer."""

from dashrl.config import TaskConfig, load_config
from dashrl.rewards.result import RewardResult
from dashrl.rewards.weighted import reward_from_config
from dashrl.tasks import get_task
from dashrl.train.run import prepare


def test_weighted_sum_by_hand(tmp_path):
    (tmp_path / "terms.py").write_text("def short(completion, problem):\n    return 1.0 if len(completion) < 10 else 0.0\n")
    config = TaskConfig(rewards=[{"fn": "correctness", "weight": 1.0}, {"fn": "format", "weight": 0.1},
                                 {"fn": f"{tmp_path / 'terms.py'}:short", "weight": -0.5, "name": "brevity"}])
    task = get_task(config)
    problem = task.eval_problems(1, 999)[0]
    right, boxed_wrong, nothing = f"The answer: \\boxed{{{problem.answer}}}", "\\boxed{99999} is it, I am sure", "no idea"
    scored = reward_from_config(config).score(task, [right, boxed_wrong, nothing], [problem] * 3)
    assert scored.terms == {"correctness": [1.0, 0.0, 0.0], "format": [1.0, 1.0, 0.0], "brevity": [0.0, 0.0, 1.0]}
    # right (len > 10): 1 + 0.1 = 1.1; boxed_wrong: 0.1; nothing (len 7 < 10): -0.5
    assert [round(x, 6) for x in scored.total] == [1.1, 0.1, -0.5]
    assert [r.reason for r in scored.correctness] == ["correct", "wrong_answer", "no_box"]


def test_default_is_correctness_alone():
    config = TaskConfig()
    task = get_task(config)
    problem = task.eval_problems(1, 999)[0]
    scored = reward_from_config(config).score(task, [f"\\boxed{{{problem.answer}}}", "x"], [problem] * 2)
    assert scored.total == [1.0, 0.0] and list(scored.terms) == ["correctness"]


def test_format_term_follows_the_answer_format():
    config = TaskConfig(answer_format="last_number", rewards=[{"fn": "format"}])
    task = get_task(config)
    problem = task.eval_problems(1, 999)[0]
    assert reward_from_config(config).score(task, ["it is 4", "\\boxed{x}"], [problem] * 2).total == [1.0, 0.0]


def _len_reward(text, problem):
    return RewardResult(float(len(text) % 2), "parity")


def test_trainer_logs_each_term_and_accuracy_by_correctness(tiny_model_dir, tmp_path):
    cfg = load_config(overrides=[f"model.path={tiny_model_dir}", f"log.run_dir={tmp_path / 'run'}",
                                 "algo.group_size=2", "algo.prompts_per_step=2", "train.micro_batch_size=2",
                                 "sampling.max_new_tokens=6",
                                 "task.rewards=[{fn: correctness, weight: 2.0}, "
                                 "{fn: tests.rewards.test_weighted:_len_reward, weight: 0.5, name: parity}]"])
    trainer = prepare(cfg, progress=False).trainer
    metrics = trainer.train_step(trainer.next_problems())
    records = trainer.records
    assert len(records) == 4
    parity = [len(r["completion"]) % 2 for r in records]
    assert metrics["reward/parity"] == sum(parity) / 4
    assert metrics["reward/mean"] == sum(2.0 * r["reward/correctness"] + 0.5 * p for r, p in zip(records, parity)) / 4
    assert metrics["reward/accuracy"] == sum(r["reward/correctness"] for r in records) / 4  # not the weighted sum
    assert {"prompt", "completion", "advantage", "extracted", "answer", "reason"} <= set(records[0])
