"""The paper's methods as named presets over existing options, and a study's run plan.

Every variant starts from the study's base config (model, task, M x G, lr,
lengths, evaluation, ...) and changes only what defines it:

    sft_h       SFT on the task's reference solutions (SFT-H)          sft.source=reference
    sft_m       rejection-sampled distillation from sft.teacher (SFT-M) sft.source=teacher
    grpo        standard GRPO schedule: one engine call per micro-batch of study.grpo_micro_batch
                (default train.micro_batch_size), no filter, KL beta = study.kl_beta
    preemptive  the whole step sampled in one engine call, no filter, KL
    dash        preemptive sampling + gradient filtering (algo.filter_tau, default 0), KL
    dash_no_kl  DASH with beta = 0
    ppo_multi   DASH without KL, PPO clip study.ppo_clip, M = study.ppo_multi_prompts, K = 3 updates
    ppo_mini    the same with M = study.ppo_mini_prompts (1 prompt = G completions), K = 32 updates

plus any ``study.custom_variants`` (name -> key=value overrides, run as RL).
The schedule parts of grpo / preemptive / dash are ``dashrl bench``'s
(``dashrl.bench.variant_config``).

Budget. By default every variant gets the same number of optimizer steps,
``train.steps``: an RL variant with K updates per sampled batch samples
``train.steps // K`` batches, an SFT variant takes ``train.steps`` steps of
``sft.batch_size`` examples. The variants in ``study.equal_time`` instead get
the training seconds that ``study.time_reference`` took with the same seed
(``train.max_seconds``, with ``train.steps`` raised to a cap of
``EQUAL_TIME_CAP`` x train.steps), as the paper compared PPO.

Sizes (the paper -> the testbed study, configs/study.yaml): 256 completions
per step -> 256 (M = 32 prompts x G = 8); PPO Multi 256 completions x K = 3 ->
the same; PPO Mini 8 completions x K = 32 -> 1 prompt x 8 completions x 32;
standard-GRPO micro-batch 4 (what fits backprop of 2048-token completions on
its GPU) -> the micro-batch ``dashrl tune`` picks for training on 2 CPU cores.

Seeds: each variant runs with ``train.seed`` = every seed in ``study.seeds``
(or only the first, for variants not in ``study.all_seeds_for`` when that is set).
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from dashrl.bench import variant_config
from dashrl.config import Config, ConfigError, with_overrides
from dashrl.errors import UserError

PRESETS = {
    "sft_h": "SFT on reference solutions (SFT-H)",
    "sft_m": "SFT on a teacher's verified samples (SFT-M)",
    "grpo": "standard GRPO (micro-batch sampling, KL)",
    "preemptive": "preemptive sampling only (KL)",
    "dash": "DASH (KL)",
    "dash_no_kl": "DASH without KL",
    "ppo_multi": "PPO Multi (large batch, K = 3)",
    "ppo_mini": "PPO Mini (small batch, K = 32)",
}
SFT_PRESETS = ("sft_h", "sft_m")

# What `dashrl study` runs without a config file: the testbed study. configs/study.yaml holds the same
# settings with the reasons for the sizes (a test keeps the two equal).
TESTBED_STUDY = {
    "model": {"path": "testbed-study"},
    "task": {"name": "testbed"},
    "algo": {"prompts_per_step": 32, "group_size": 8, "beta": 0.0, "filter_tau": 0.0},
    "train": {"steps": 100, "lr": 2.0e-4, "micro_batch_size": 64},
    "sampling": {"max_new_tokens": 64},
    "eval": {"num_problems": 512, "samples": 0, "ks": [1], "every": 0},
    "sft": {"teacher": "testbed-teacher", "teacher_samples": 4, "num_prompts": 512, "batch_size": 64},
    "study": {"out_dir": "runs/study", "seeds": [0, 1, 2], "ood_task": "testbed-hard", "ood_problems": 128,
              "ood_max_new_tokens": 96, "passk_problems": 16, "passk_samples": 16},
}
EQUAL_TIME_CAP = 100  # an equal-time variant samples at most this many x train.steps batches


@dataclass(frozen=True)
class Job:
    """One training run of the study.

    variant, seed: what and which repetition; kind: "sft" or "rl"
    config:    the run's resolved config (``train.max_seconds`` is filled in later for
               equal-time jobs, from ``time_from``'s finished run with the same seed)
    time_from: the variant whose training seconds this job gets (None = equal steps)
    """

    variant: str
    seed: int
    kind: Literal["sft", "rl"]
    config: Config
    time_from: str | None = None

    @property
    def run_dir(self) -> Path:
        return Path(self.config.log.run_dir)


def describe(name: str) -> str:
    return PRESETS.get(name, f"custom variant '{name}'")


def run_dir(out_dir: Path, variant: str, seed: int) -> Path:
    return out_dir / "runs" / variant / f"seed{seed}"


def _preset_overrides(base: Config, name: str) -> list[str]:
    """The key=value overrides that make preset ``name`` from the base config (schedule parts from bench)."""
    study = base.study
    kl = [f"algo.beta={study.kl_beta}"]
    no_kl_dash = ["algo.beta=0", *_schedule(base, "dash")]
    ppo = [f"algo.clip_eps_low={study.ppo_clip}", "algo.clip_eps_high=null"]
    if name == "sft_h":
        return ["sft.source=reference"]
    if name == "sft_m":
        return ["sft.source=teacher"]
    if name == "grpo":
        return [*_schedule(base, "grpo"), *kl]
    if name in ("preemptive", "dash"):
        return [*_schedule(base, name), *kl]
    if name == "dash_no_kl":
        return no_kl_dash
    if name == "ppo_multi":
        m = study.ppo_multi_prompts or base.algo.prompts_per_step
        return [*no_kl_dash, *ppo, f"algo.prompts_per_step={m}", f"algo.updates_per_batch={study.ppo_multi_updates}",
                *_fit_micro_batch(base, m)]
    if name == "ppo_mini":
        m = study.ppo_mini_prompts
        return [*no_kl_dash, *ppo, f"algo.prompts_per_step={m}", f"algo.updates_per_batch={study.ppo_mini_updates}",
                *_fit_micro_batch(base, m)]
    return list(study.custom_variants[name])


def _schedule(base: Config, bench_name: str) -> list[str]:
    """bench's schedule for grpo / preemptive / dash, as overrides (run dir and eval cadence left to the study)."""
    micro = base.study.grpo_micro_batch or base.train.micro_batch_size
    cfg = variant_config(base, bench_name, Path("."), paper_micro_batch=micro)
    train, algo = cfg.train, cfg.algo
    return [f"train.micro_batch_size={train.micro_batch_size}", f"train.generation_batch_size={train.generation_batch_size}",
            f"train.micro_batch_tokens={_yaml(train.micro_batch_tokens)}", f"algo.filter_tau={_yaml(algo.filter_tau)}"]


def _fit_micro_batch(base: Config, prompts: int) -> list[str]:
    """Whole-step sampling of M x G completions, micro-batch no larger than the step."""
    rows = prompts * base.algo.group_size
    return [f"train.generation_batch_size={rows}", f"train.micro_batch_size={min(base.train.micro_batch_size, rows)}"]


def _yaml(value) -> str:
    return "null" if value is None else str(value)


def _unknown(name: str, known: list[str]) -> UserError:
    close = difflib.get_close_matches(name, known, n=1)
    hint = f" (did you mean '{close[0]}'?)" if close else f"; known: {', '.join(known)}"
    return UserError(f"study.variants: unknown variant '{name}'{hint}")


def seeds_for(base: Config, variant: str) -> list[int]:
    study = base.study
    if study.all_seeds_for is None or variant in study.all_seeds_for:
        return list(study.seeds)
    return study.seeds[:1]


def variant_job_config(base: Config, name: str, seed: int, out_dir: Path, equal_time: bool) -> Config:
    """The resolved config of one variant + seed (a UserError naming the variant if it does not validate)."""
    k = 1 if name in SFT_PRESETS else None
    overrides = _preset_overrides(base, name)
    common = [f"log.run_dir={run_dir(out_dir, name, seed)}", f"train.seed={seed}", "log.save_every=0",
              "log.keep_last=1", "train.max_seconds=null"]
    try:
        cfg = with_overrides(base, overrides + common)
        k = k or cfg.algo.updates_per_batch
        batches = EQUAL_TIME_CAP * base.train.steps if equal_time else max(1, base.train.steps // k)
        cfg = with_overrides(cfg, [f"train.steps={batches}"])
    except ConfigError as exc:
        raise UserError(f"study variant '{name}': {exc}") from None
    # a run's config.yaml holds only what the run uses, so that changing the study's evaluation
    # settings (or SFT settings, for an RL run) does not count as a different run when resuming
    unused = {"study": {}} if name in SFT_PRESETS else {"study": {}, "sft": {}}
    return Config.model_validate({**cfg.model_dump(mode="json"), **unused})


def plan(base: Config) -> list[Job]:
    """Every run of the study, in an order where each time reference runs before the jobs timed by it.

    Raises UserError for unknown variants, a missing time reference, or a
    variant whose config does not validate, before anything runs.
    """
    study = base.study
    known = [*PRESETS, *study.custom_variants]
    clash = sorted(set(study.custom_variants) & set(PRESETS))
    if clash:
        raise UserError(f"study.custom_variants: '{clash[0]}' is a preset name; choose another")
    for name in [*study.variants, *(study.all_seeds_for or []), *study.equal_time]:
        if name not in known:
            raise _unknown(name, known)
    if len(set(study.variants)) != len(study.variants):
        raise UserError("study.variants: a variant is listed twice")
    if len(set(study.seeds)) != len(study.seeds):
        raise UserError("study.seeds: a seed is listed twice")
    timed = [v for v in study.variants if v in study.equal_time]
    if timed:
        if study.time_reference not in study.variants:
            raise UserError(f"study.equal_time variants ({', '.join(timed)}) need study.time_reference "
                            f"'{study.time_reference}' among study.variants")
        if study.time_reference in study.equal_time:
            raise UserError(f"study.time_reference '{study.time_reference}' cannot itself be in study.equal_time")
        if any(v in SFT_PRESETS for v in timed):
            raise UserError("study.equal_time: SFT variants take equal steps, not equal time")
        if base.train.lr_schedule != "constant":
            raise UserError("study.equal_time needs train.lr_schedule=constant (the run length is not known in advance)")
        reference_seeds = seeds_for(base, study.time_reference)
        missing = [(v, s) for v in timed for s in seeds_for(base, v) if s not in reference_seeds]
        if missing:
            v, s = missing[0]
            raise UserError(f"study: '{v}' runs seed {s} but its time reference '{study.time_reference}' does not "
                            "(add it to study.all_seeds_for)")
    order = sorted(study.variants, key=lambda v: v in timed)  # stable: references before timed variants
    out_dir = Path(study.out_dir)
    jobs = []
    for name in order:
        kind = "sft" if name in SFT_PRESETS else "rl"
        for seed in seeds_for(base, name):
            cfg = variant_job_config(base, name, seed, out_dir, equal_time=name in timed)
            jobs.append(Job(name, seed, kind, cfg, study.time_reference if name in timed else None))
    return jobs
