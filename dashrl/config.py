"""Typed run configuration: one documented field each, validated once at load.

A run's config is built from the defaults below, then a YAML file, then
``key=value`` overrides from the command line (``algo.beta=0.04``). Unknown keys
get a did-you-mean suggestion; every error is raised as a ``ConfigError`` whose
message is one line naming the key and the problem.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from dashrl.errors import UserError


class ConfigError(UserError):
    """A config file, key or value is wrong."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ModelConfig(_Section):
    path: str = Field("testbed", description="'testbed' (built-in tiny model), a local directory or a Hugging Face hub id")
    dtype: Literal["float32", "bfloat16", "float16"] = Field("float32", description="parameter dtype of policy and engine")


class TaskConfig(_Section):
    name: str = Field("testbed", description="task to train on; 'testbed' is the built-in multi-step arithmetic task")
    train_seed: int = Field(1, description="seed of the training-prompt stream")
    eval_seed: int = Field(999, description="seed of the held-out evaluation problems (disjoint stream from training)")


class SamplingConfig(_Section):
    temperature: float = Field(1.0, gt=0, le=5, description="sampling temperature for rollouts")
    top_p: float = Field(1.0, gt=0, le=1, description="nucleus sampling mass")
    top_k: int = Field(0, ge=0, description="keep only the k most likely tokens (0 = off)")
    max_new_tokens: int = Field(64, ge=1, le=32768, description="maximum completion length in tokens")


class AlgoConfig(_Section):
    group_size: int = Field(8, ge=2, description="G: completions sampled per prompt (the group baseline needs 2+)")
    prompts_per_step: int = Field(32, ge=1, description="M: prompts per sampled batch; the batch holds M x G completions")
    scale_rewards: bool = Field(True, description="divide advantages by the group's reward std (+eps), as GRPO does")
    clip_eps_low: float | None = Field(None, ge=0, lt=1, description="PPO clip: ratio floor is 1 - eps_low (None = no clipping)")
    clip_eps_high: float | None = Field(None, ge=0, description="PPO clip: ratio ceiling is 1 + eps_high (defaults to eps_low)")
    updates_per_batch: int = Field(1, ge=1, description="K: optimizer steps taken on each sampled batch (K > 1 is PPO-style)")
    beta: float = Field(0.0, ge=0, description="KL coefficient to the frozen reference model (0 = no reference model loaded)")
    kl_estimator: Literal["k1", "k2", "k3"] = Field("k3", description="per-token KL estimator")
    filter_tau: float | None = Field(
        0.0, ge=0, description="gradient filtering: drop samples with |advantage| <= tau before any forward pass "
        "(None = keep all; 0 drops exactly the groups whose rewards are all equal)"
    )
    filter_normalize: Literal["all", "kept"] = Field(
        "all", description="loss normaliser after filtering: 'all' counts dropped samples as present with zero loss "
        "(with beta = 0 the gradient equals the unfiltered one), 'kept' divides by kept samples only"
    )
    loss_agg: Literal["grpo", "bnpo", "dr_grpo", "dapo"] = Field(
        "grpo",
        description="grpo: mean per sequence then mean; bnpo: token mean per micro-batch; "
        "dr_grpo: sum / (rows x max_new_tokens); dapo: token mean over the optimizer step",
    )

    @model_validator(mode="after")
    def _clip_pair(self) -> "AlgoConfig":
        if self.clip_eps_high is not None and self.clip_eps_low is None:
            raise ValueError("clip_eps_high is set but clip_eps_low is not; set clip_eps_low to enable clipping")
        return self


class TrainConfig(_Section):
    steps: int = Field(500, ge=1, description="number of sampled batches; optimizer steps = steps x updates_per_batch")
    micro_batch_size: int = Field(16, ge=1, description="completions per forward/backward pass (gradient accumulation unit)")
    micro_batch_tokens: int | None = Field(
        None, ge=1, description="if set, form micro-batches by padded-token budget (length-sorted) instead of "
        "micro_batch_size rows"
    )
    generation_batch_size: int | None = Field(
        None, ge=1, description="completions per engine call; None = the whole step (M x G) in one call, i.e. "
        "preemptive sampling; set it to micro_batch_size for the standard GRPO schedule"
    )
    lr: float = Field(2e-4, gt=0, description="peak AdamW learning rate")
    lr_schedule: Literal["constant", "linear", "cosine"] = Field("constant", description="decay after warmup")
    warmup_steps: int = Field(5, ge=0, description="optimizer steps of linear warmup")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay")
    adam_betas: tuple[float, float] = Field((0.9, 0.99), description="AdamW betas")
    max_grad_norm: float = Field(1.0, gt=0, description="clip the global gradient norm to this")
    seed: int = Field(0, description="seed for torch, sampling and data order")


class EvalConfig(_Section):
    num_problems: int = Field(512, ge=1, description="held-out problems evaluated")
    every: int = Field(100, ge=0, description="evaluate every N steps during training (0 = only before and after)")
    samples: int = Field(4, ge=0, description="sampled completions per problem for sampled pass@1 / pass@k (0 = greedy only)")
    temperature: float = Field(1.0, gt=0, description="temperature for sampled evaluation")
    ks: list[int] = Field([1, 4], description="k values for pass@k (each <= samples)")
    batch_size: int = Field(256, ge=1, description="prompts per engine call during evaluation")

    @model_validator(mode="after")
    def _ks_fit(self) -> "EvalConfig":
        too_big = [k for k in self.ks if k < 1 or k > max(self.samples, 1)]
        if self.samples and too_big:
            raise ValueError(f"ks {too_big} must lie in 1..samples ({self.samples})")
        return self


class LogConfig(_Section):
    run_dir: str = Field("runs/demo", description="where config, metrics.jsonl, checkpoints and summary go")
    save_every: int = Field(100, ge=0, description="checkpoint every N steps (0 = only at the end)")
    keep_last: int = Field(2, ge=1, description="checkpoints kept on disk")
    progress: bool = Field(True, description="show a live progress bar")
    tensorboard: bool = Field(False, description="also log to TensorBoard (needs the tensorboard package)")
    wandb_project: str | None = Field(None, description="also log to this Weights & Biases project (needs wandb)")


class Config(_Section):
    model: ModelConfig = ModelConfig()
    task: TaskConfig = TaskConfig()
    sampling: SamplingConfig = SamplingConfig()
    algo: AlgoConfig = AlgoConfig()
    train: TrainConfig = TrainConfig()
    eval: EvalConfig = EvalConfig()
    log: LogConfig = LogConfig()

    @model_validator(mode="after")
    def _cross_checks(self) -> "Config":
        batch = self.algo.prompts_per_step * self.algo.group_size
        if self.train.micro_batch_size > batch:
            raise ValueError(f"train.micro_batch_size ({self.train.micro_batch_size}) exceeds the batch of M x G = {batch}")
        G = self.algo.group_size
        for name in ("micro_batch_size", "generation_batch_size"):
            size = getattr(self.train, name)
            if size is not None and size % G and G % size:
                raise ValueError(
                    f"train.{name} ({size}) and algo.group_size ({G}) must divide one another "
                    "so that groups split evenly"
                )
        return self


# ---------------------------------------------------------------- loading


def _known_keys(model: type[BaseModel], prefix: str = "") -> list[str]:
    keys = []
    for name, field in model.model_fields.items():
        sub = field.annotation
        if isinstance(sub, type) and issubclass(sub, BaseModel):
            keys += _known_keys(sub, f"{prefix}{name}.")
        else:
            keys.append(prefix + name)
    return keys


def _suggest(key: str) -> str:
    close = difflib.get_close_matches(key, _known_keys(Config), n=1, cutoff=0.6)
    if not close:  # also try matching the last part alone ("lr" -> "train.lr")
        leaf = key.rsplit(".", 1)[-1]
        close = [k for k in _known_keys(Config) if k.rsplit(".", 1)[-1] == leaf][:1]
    return f" (did you mean '{close[0]}'?)" if close else ""


def _set_dotted(tree: dict, dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = tree
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override '{dotted}': '{part}' is not a section")
    node[parts[-1]] = value


def parse_overrides(overrides: list[str]) -> dict:
    """``["algo.beta=0.04", "train.steps=10"]`` -> nested dict with YAML-parsed values."""
    tree: dict = {}
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"override '{item}' is not of the form key=value")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw
        _set_dotted(tree, key.strip(), value)
    return tree


def _merge(base: dict, extra: dict) -> dict:
    out = dict(base)
    for key, value in extra.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def _describe(error: ValidationError, source: str) -> str:
    first = error.errors()[0]
    key = ".".join(str(p) for p in first["loc"])
    if first["type"] == "extra_forbidden":
        return f"{source}: unknown config key '{key}'{_suggest(key)}"
    value = first.get("input")
    what = first["msg"].removeprefix("Value error, ")
    if key and not isinstance(value, dict):
        return f"{source}: {key} = {value!r}: {what}"
    if key:
        return f"{source}: [{key}] {what}"
    return f"{source}: {what}"


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Defaults <- YAML file <- ``key=value`` overrides, validated; raises ConfigError."""
    tree: dict = {}
    source = "config"
    if path is not None:
        path = Path(path)
        source = str(path)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        try:
            loaded = yaml.safe_load(path.read_text())
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" line {mark.line + 1}" if mark else ""
            raise ConfigError(f"{path}{where}: not valid YAML") from None
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"{path}: top level must be a mapping of sections")
        tree = loaded or {}
    if overrides:
        tree = _merge(tree, parse_overrides(overrides))
        source = f"{source} + overrides" if path else "overrides"
    try:
        return Config.model_validate(tree)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, source)) from None


def with_overrides(config: Config, overrides: list[str]) -> Config:
    """A validated copy of ``config`` with ``key=value`` overrides applied."""
    tree = _merge(config.model_dump(mode="json"), parse_overrides(overrides))
    try:
        return Config.model_validate(tree)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, "overrides")) from None


def to_yaml(config: Config) -> str:
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)
