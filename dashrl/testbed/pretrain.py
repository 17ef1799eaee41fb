"""Build (once) and cache the testbed's base checkpoint.

The base model is made by a short supervised pretraining of the tiny model on
step-by-step solutions (``ArithmeticTask.pretrain_stream``) of the whole problem
space (``corpus="whole"``: the default ``testbed`` base, the demo's) or of the
pretraining half only (``corpus="half"``: ``testbed-study``, the study's base,
which has seen none of the task's training problems and none of its
human-written reference solutions, which SFT-H trains on), stopped as soon as greedy accuracy on a calibration set
(disjoint from evaluation) reaches ``target_accuracy``: a base that is right
sometimes, so that RL has both signal and room. Deterministic for a given seed
on a given machine. Cached under ``$DASHRL_CACHE`` (default ``~/.cache/dashrl``)
and written atomically, so a second run reuses it and a killed build leaves
nothing that loads. ``ensure_teacher_checkpoint`` builds a stronger checkpoint
the same way (pretraining run on to a higher accuracy): the teacher of SFT-M.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import torch
from tqdm import tqdm

from dashrl.rewards.math import score_math
from dashrl.rollout.engine import SamplingParams
from dashrl.rollout.hf_engine import HFEngine
from dashrl.tasks.testbed import ArithmeticTask
from dashrl.testbed.model import build_model, build_tokenizer


@dataclass(frozen=True)
class PretrainSpec:
    seed: int = 0
    hidden: int = 64
    layers: int = 3
    lr: float = 3e-3
    batch_size: int = 64
    max_steps: int = 2000
    check_every: int = 50
    calibration_size: int = 256
    calibration_seed: int = 12345
    target_accuracy: float = 0.3
    corpus: str = "whole"  # "whole": the whole problem space; "half": the pretraining half (the study's base)
    version: int = 4  # bump when the task or model code changes what gets built


def cache_root() -> Path:
    return Path(os.environ.get("DASHRL_CACHE", Path.home() / ".cache" / "dashrl"))


def base_checkpoint_dir(spec: PretrainSpec = PretrainSpec()) -> Path:
    key = hashlib.sha1(json.dumps(asdict(spec), sort_keys=True).encode()).hexdigest()[:10]
    return cache_root() / f"testbed-base-{key}"


def ensure_base_checkpoint(spec: PretrainSpec = PretrainSpec(), progress: bool = True) -> Path:
    """Path of the cached base checkpoint, pretraining it first if needed."""
    def write(tmp: Path) -> None:
        model, tokenizer, info = pretrain(spec, progress)
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / "pretrain.json").write_text(json.dumps({"spec": asdict(spec), **info}, indent=2))

    return build_once(base_checkpoint_dir(spec), write)


def build_once(final: Path, write: Callable[[Path], None]) -> Path:
    """``final`` if it already holds a model, else ``write`` it into a temp directory published atomically there.

    A killed build leaves nothing that loads; if another process publishes first, its copy is kept.
    """
    if (final / "config.json").is_file():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=final.parent))
    try:
        write(tmp)
        try:
            os.replace(tmp, final)
        except OSError:  # another process finished first
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


STUDY_BASE = PretrainSpec(corpus="half")  # model.path=testbed-study
TEACHER = PretrainSpec(target_accuracy=0.75, max_steps=3000, corpus="half")  # the study's SFT-M teacher


def ensure_teacher_checkpoint(spec: PretrainSpec | None = None, progress: bool = True) -> Path:
    """A stronger testbed checkpoint for distillation (SFT-M): the same pretraining, run on to a higher accuracy.

    It retraces the base model's pretraining (same seed and data) and goes on
    until calibration accuracy reaches ``spec.target_accuracy`` (default ``TEACHER``:
    75%, reached after about twice the base's steps); cached like the base.
    """
    return ensure_base_checkpoint(spec or TEACHER, progress)


def _sft_batch(tokenizer, problems):
    """Prompt + solution + EOS, loss only on solution tokens."""
    prompts = [tokenizer(p.prompt)["input_ids"] for p in problems]
    full = [tokenizer(p.prompt + p.solution)["input_ids"] + [tokenizer.eos_token_id] for p in problems]
    width = max(len(f) for f in full)
    input_ids = torch.full((len(full), width), tokenizer.pad_token_id)
    labels = torch.full((len(full), width), -100)
    mask = torch.zeros((len(full), width), dtype=torch.long)
    for i, (p, f) in enumerate(zip(prompts, full)):
        input_ids[i, : len(f)] = torch.tensor(f)
        labels[i, len(p) : len(f)] = torch.tensor(f[len(p) :])
        mask[i, : len(f)] = 1
    return input_ids, mask, labels


def greedy_accuracy(model, tokenizer, problems, max_new_tokens: int = 64) -> float:
    """Greedy pass@1 of ``model`` (left in training mode afterwards)."""
    engine = HFEngine(model, tokenizer)  # wraps the same model object: no copy
    groups = engine.generate([p.prompt for p in problems], 1, SamplingParams(max_new_tokens=max_new_tokens, greedy=True))
    model.train()
    return sum(score_math(g[0].text, p.answer, symbolic=False).score for g, p in zip(groups, problems)) / len(problems)


def pretrain(spec: PretrainSpec, progress: bool = True):
    torch.manual_seed(spec.seed)
    tokenizer = build_tokenizer()
    model = build_model(len(tokenizer), spec.seed, spec.hidden, spec.layers)
    task = ArithmeticTask()
    stream = task.pretrain_stream(spec.seed + 7919, half=spec.corpus == "half")
    calibration = ArithmeticTask().eval_problems(spec.calibration_size, spec.calibration_seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=spec.lr, betas=(0.9, 0.98), weight_decay=0.0)
    model.train()
    accuracy, step = 0.0, 0
    bar = tqdm(total=spec.max_steps, desc="building testbed base model", disable=not progress, leave=False)
    for step in range(1, spec.max_steps + 1):
        input_ids, mask, labels = _sft_batch(tokenizer, [next(stream) for _ in range(spec.batch_size)])
        loss = model(input_ids=input_ids, attention_mask=mask, labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        bar.update(1)
        if step % spec.check_every == 0:
            accuracy = greedy_accuracy(model, tokenizer, calibration)
            bar.set_postfix(loss=f"{loss.item():.3f}", calib_acc=f"{accuracy:.2f}")
            if accuracy >= spec.target_accuracy:
                break
    bar.close()
    model.eval()
    return model, tokenizer, {"steps": step, "calibration_accuracy": accuracy}
