"""Prompt formatting: template substitution, the chat template with generation prompt, BOS handling, errors."""

import pytest

from dashrl.config import TaskConfig
from dashrl.errors import UserError
from dashrl.tasks.base import Problem
from dashrl.tasks.prompts import format_prompt, prompt_formatter, raw_prompt
from dashrl.testbed.model import build_tokenizer

PROBLEM = Problem("p", "What is 1+1?", "2")
# ChatML-like: each message on its own <|role|> line; the generation prompt opens the assistant turn
CHAT = ("{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}"
        "{% if add_generation_prompt %}<|assistant|>{% endif %}")


@pytest.fixture
def chat_tokenizer():
    tokenizer = build_tokenizer()
    tokenizer.chat_template = CHAT
    return tokenizer


def test_template_replaces_prompt_and_keeps_other_braces_literal():
    template = "Q: {prompt}\nPut the answer in \\boxed{}."
    assert format_prompt(PROBLEM, template) == "Q: What is 1+1?\nPut the answer in \\boxed{}."
    assert format_prompt(PROBLEM) == raw_prompt(PROBLEM) == "What is 1+1?"


def test_raw_formatter_needs_no_chat_template():
    tokenizer = build_tokenizer()  # no chat template
    assert prompt_formatter(TaskConfig(), tokenizer) is raw_prompt
    templated = prompt_formatter(TaskConfig(prompt_template="Solve: {prompt}"), tokenizer)
    assert templated(PROBLEM) == "Solve: What is 1+1?"


def test_chat_format_wraps_the_templated_prompt_as_a_user_turn(chat_tokenizer):
    cfg = TaskConfig(prompt_format="chat", prompt_template="Solve: {prompt}", system_prompt="Be brief.")
    text = prompt_formatter(cfg, chat_tokenizer)(PROBLEM)
    assert text == "<|system|>Be brief.\n<|user|>Solve: What is 1+1?\n<|assistant|>"
    no_system = prompt_formatter(TaskConfig(prompt_format="chat"), chat_tokenizer)(PROBLEM)
    assert no_system == "<|user|>What is 1+1?\n<|assistant|>"


def test_chat_without_template_or_with_a_broken_one_is_a_user_error(chat_tokenizer):
    with pytest.raises(UserError, match="has no chat template"):
        prompt_formatter(TaskConfig(prompt_format="chat"), build_tokenizer())
    chat_tokenizer.chat_template = "{% if messages[0]['role'] == 'system' %}{{ raise_exception('no system role') }}" \
                                   "{% endif %}{{ messages[0]['content'] }}"
    with pytest.raises(UserError, match="chat template failed: .*no system role"):
        prompt_formatter(TaskConfig(prompt_format="chat", system_prompt="x"), chat_tokenizer)


class _BosTokenizer:
    """A stand-in whose chat template writes <s> and whose tokenizer may add <s> itself."""

    bos_token, bos_token_id = "<s>", 1

    def __init__(self, adds_bos: bool):
        self.adds_bos = adds_bos

    def apply_chat_template(self, messages, tokenize, add_generation_prompt):
        return "<s>[USER] " + messages[-1]["content"] + " [BOT]"

    def __call__(self, text):
        return {"input_ids": ([1] if self.adds_bos else []) + [5]}


def test_a_bos_written_by_the_template_is_dropped_only_when_tokenizing_adds_one():
    assert format_prompt(PROBLEM, chat_tokenizer=_BosTokenizer(adds_bos=True)) == "[USER] What is 1+1? [BOT]"
    assert format_prompt(PROBLEM, chat_tokenizer=_BosTokenizer(adds_bos=False)) == "<s>[USER] What is 1+1? [BOT]"


class _Recorder:
    """Wraps an engine and keeps every prompt string it is sent."""

    def __init__(self, engine):
        self.engine, self.prompts = engine, []

    def generate(self, prompts, n, sampling):
        self.prompts += prompts
        return self.engine.generate(prompts, n, sampling)

    def load_weights(self, state):
        self.engine.load_weights(state)


def test_training_and_evaluation_send_the_formatted_prompts(tiny_model_dir, tmp_path):
    from dashrl.config import load_config
    from dashrl.train.run import prepare, train

    cfg = load_config(overrides=[f"model.path={tiny_model_dir}", f"log.run_dir={tmp_path / 'run'}",
                                 "task.prompt_template='Task: {prompt}'",  # quoted: YAML would read a mapping
                                 "algo.group_size=2", "algo.prompts_per_step=2", "train.micro_batch_size=2",
                                 "sampling.max_new_tokens=4", "train.steps=1", "eval.num_problems=2", "eval.samples=0"])
    setup = prepare(cfg, progress=False)
    recorder = setup.trainer.engine = _Recorder(setup.trainer.engine)
    train(setup, progress=False)
    eval_prompts = {f"Task: {p.prompt}" for p in setup.trainer.task.eval_problems(2, cfg.task.eval_seed)}
    assert all(p.startswith("Task: Compute ") for p in recorder.prompts)
    assert eval_prompts <= set(recorder.prompts)  # evaluation before and after training
    assert len(set(recorder.prompts) - eval_prompts) == 2  # the step's two training prompts
