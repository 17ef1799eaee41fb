"""``dashrl study``: train every variant of a study, evaluate each trained model, write the report.

Layout of ``study.out_dir``::

    study.yaml                         the resolved study config
    runs/base/                         the base model, evaluated only (config.yaml, study_eval.json, records)
    runs/VARIANT/seedS/                one training run: config.yaml, metrics.jsonl, summary.json,
                                       checkpoints/, and the study's evaluations of its final model:
      study_eval.json                  out-of-distribution metrics and the pass@k curve, with their settings
      eval_ood.jsonl, eval_passk.jsonl every completion scored, with its reason
    report.md, report.html, *.png      see dashrl.study.report

In-distribution accuracy before and after training is the run's own
evaluation (summary.json); the study adds, for the final checkpoint, the
out-of-distribution task (``study.ood_task``) and a pass@k curve (k = 1 .. 
``study.passk_samples`` on ``study.passk_problems`` problems).

Resuming: a run whose config.yaml equals the variant's resolved config and that
has a summary.json is not trained again; its study evaluations are redone only
if missing or made with other settings. An unfinished run starts over.
Everything that can fail on bad input (variants, configs, tasks, model paths) is
checked before anything is trained.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from pydantic import ValidationError

from dashrl.config import Config, ConfigError, EvalConfig, TaskConfig, load_config, to_yaml
from dashrl.errors import UserError
from dashrl.runlog import write_atomic
from dashrl.study.presets import Job, plan
from dashrl.study.report import write_report
from dashrl.study.rundir import BASE, STUDY_EVAL
from dashrl.train.signals import finished, raise_if_interrupted



def ood_task_config(config: Config) -> TaskConfig | None:
    """The out-of-distribution task's config (None when the study has none); raises UserError."""
    study = config.study
    if study.ood_task is None:
        return None
    fields = {"eval_seed": config.task.eval_seed, **study.ood_task_options, "name": study.ood_task}
    try:
        return TaskConfig.model_validate(fields)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise UserError(f"study.ood_task_options: {where + ': ' if where else ''}"
                        f"{first['msg'].removeprefix('Value error, ')}") from None


def passk_ks(samples: int) -> list[int]:
    """1, 2, 4, ... up to ``samples``, and ``samples`` itself."""
    ks, k = [], 1
    while k < samples:
        ks.append(k)
        k *= 2
    return ks + [samples]


def eval_spec(config: Config) -> dict:
    """Everything the study's own evaluations depend on (a change means re-evaluating, not retraining)."""
    study = config.study
    ood = ood_task_config(config)
    return {
        "task": config.task.model_dump(mode="json"),
        "eval": config.eval.model_dump(mode="json"),
        "max_new_tokens": config.sampling.max_new_tokens,
        "ood_task": ood.model_dump(mode="json") if ood else None,
        "ood_problems": study.ood_problems,
        "ood_max_new_tokens": study.ood_max_new_tokens or config.sampling.max_new_tokens,
        "passk_problems": study.passk_problems,
        "passk_samples": study.passk_samples,
    }


def _write_records(path: Path, records: list[dict]) -> None:
    write_atomic(path, "".join(json.dumps(r) + "\n" for r in records))


def evaluate_model(model_dir: str, config: Config, run_dir: Path, in_distribution: bool,
                   progress: bool = False) -> dict:
    """Evaluate one model (out of distribution, pass@k curve, and optionally in distribution); write study_eval.json."""
    from dashrl.eval.evaluate import evaluate
    from dashrl.models import load_model, load_tokenizer
    from dashrl.rollout.hf_engine import HFEngine
    from dashrl.tasks import get_task
    from dashrl.tasks.prompts import prompt_formatter

    start = time.perf_counter()
    spec = eval_spec(config)
    tokenizer = load_tokenizer(model_dir)
    engine = HFEngine(load_model(model_dir, config.model.dtype), tokenizer)
    task = get_task(config.task)
    fmt = prompt_formatter(config.task, tokenizer)
    out: dict = {"model": model_dir, "spec": spec}
    if in_distribution:
        problems = task.eval_problems(config.eval.num_problems, config.task.eval_seed)
        result = evaluate(engine, task, problems, config.eval, config.sampling.max_new_tokens, format_prompt=fmt,
                          progress=progress, desc="eval in distribution")
        _write_records(run_dir / "eval_in_distribution.jsonl", result.records)
        out["in_distribution"] = {"task": config.task.name, "problems": len(problems), "metrics": result.metrics,
                                  "records": "eval_in_distribution.jsonl"}
    ood_cfg = ood_task_config(config)
    if ood_cfg is not None:
        ood = get_task(ood_cfg)
        problems = ood.eval_problems(config.study.ood_problems, ood_cfg.eval_seed)
        result = evaluate(engine, ood, problems, config.eval.model_copy(update={"num_problems": len(problems)}),
                          spec["ood_max_new_tokens"], format_prompt=prompt_formatter(ood_cfg, tokenizer),
                          progress=progress, desc="eval out of distribution")
        _write_records(run_dir / "eval_ood.jsonl", result.records)
        out["out_of_distribution"] = {"task": ood_cfg.name, "problems": len(problems), "metrics": result.metrics,
                                      "records": "eval_ood.jsonl"}
    study = config.study
    passk_cfg = EvalConfig(num_problems=study.passk_problems, every=0, samples=study.passk_samples,
                           temperature=config.eval.temperature, ks=passk_ks(study.passk_samples),
                           batch_size=config.eval.batch_size)
    problems = task.eval_problems(study.passk_problems, config.task.eval_seed)
    result = evaluate(engine, task, problems, passk_cfg, config.sampling.max_new_tokens, format_prompt=fmt,
                      progress=progress, desc="eval pass@k")
    _write_records(run_dir / "eval_passk.jsonl", result.records)
    out["pass_at_k"] = {"task": config.task.name, "problems": len(problems), "samples": study.passk_samples,
                        "temperature": passk_cfg.temperature, "metrics": result.metrics, "records": "eval_passk.jsonl"}
    out["seconds"] = time.perf_counter() - start
    write_atomic(run_dir / STUDY_EVAL, json.dumps(out, indent=2) + "\n")
    return out


def _evaluated(run_dir: Path, config: Config) -> bool:
    path = run_dir / STUDY_EVAL
    return path.is_file() and json.loads(path.read_text()).get("spec") == eval_spec(config)


def _trained(job_config: Config) -> bool:
    """The run finished with this very config (compared as loaded, so fields added to the config later,
    with their defaults, do not count as a change)."""
    run_dir = Path(job_config.log.run_dir)
    if not (finished(run_dir / "summary.json") and (run_dir / "config.yaml").is_file()):
        return False  # not run, stopped by a signal, or damaged
    try:
        saved = load_config(run_dir / "config.yaml")
    except ConfigError:
        return False
    return saved.model_dump(mode="json") == job_config.model_dump(mode="json")


def _with_time_budget(job: Job, out_dir: Path) -> Config:
    """An equal-time job's config: train.max_seconds = its time reference's training seconds (same seed)."""
    if job.time_from is None:
        return job.config
    from dashrl.study.presets import run_dir

    summary_path = run_dir(out_dir, job.time_from, job.seed) / "summary.json"
    seconds = json.loads(summary_path.read_text())["train_seconds"]
    return job.config.model_copy(update={"train": job.config.train.model_copy(update={"max_seconds": round(seconds, 3)})})


def _train(config: Config, kind: str, progress: bool) -> None:
    if kind == "sft":
        from dashrl.train.sft import prepare_sft, train_sft

        raise_if_interrupted(train_sft(prepare_sft(config, progress=progress), progress=progress))
    else:
        from dashrl.train.run import prepare, train

        raise_if_interrupted(train(prepare(config, progress=progress), progress=progress))  # a signal stops the study


def check_inputs(config: Config, jobs: list[Job], progress: bool) -> str:
    """Tasks, OOD task, model and (for SFT-M) teacher resolve; returns the base model path. Raises UserError."""
    from dashrl.models import resolve_model_path
    from dashrl.tasks import get_task
    from dashrl.train.sft import TESTBED_TEACHER, resolve_teacher

    get_task(config.task)
    ood = ood_task_config(config)
    if ood is not None:
        get_task(ood)
    if any(j.kind == "sft" and j.config.sft.source == "teacher" for j in jobs):
        if config.sft.teacher == TESTBED_TEACHER and config.task.name != "testbed":
            raise UserError("sft_m: the testbed teacher only knows the testbed task; name a teacher model "
                            "with sft.teacher=PATH_OR_HUB_ID")
        resolve_teacher(config.sft.teacher, progress)
    return resolve_model_path(config.model.path, progress=progress)


def run_study(config: Config, progress: bool = True, report_only: bool = False, say=None) -> dict:
    """Run (or resume) every job of the study, then write the report; returns the report's content.

    ``report_only``: train and evaluate nothing, write the report from the runs already finished.
    ``say``: where the one-line progress messages go (default: printed and flushed).
    """
    say = say or (lambda line: print(line, flush=True))
    from dashrl.train.checkpoint import latest_checkpoint

    jobs = plan(config)
    out_dir = Path(config.study.out_dir)
    if report_only:
        if not (out_dir / "runs").is_dir():
            raise UserError(f"--report-only: {out_dir} holds no study runs yet")
        return write_report(config, out_dir, jobs)
    say(f"study: {len(jobs)} training runs planned; checking tasks and models (the testbed's are built on first use)")
    model_path = check_inputs(config, jobs, progress)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "study.yaml").write_text(to_yaml(config))
    start = time.perf_counter()

    base_dir = out_dir / "runs" / BASE
    base_config = Config.model_validate({**config.model_dump(mode="json"), "study": {}, "sft": {},
                                         "log": {**config.log.model_dump(mode="json"), "run_dir": str(base_dir)}})
    if _evaluated(base_dir, config):
        say(f"study: base model: evaluated earlier, reusing {base_dir}")
    else:
        say(f"study: base model: evaluating {model_path}")
        base_dir.mkdir(parents=True, exist_ok=True)
        (base_dir / "config.yaml").write_text(to_yaml(base_config))
        evaluate_model(model_path, config, base_dir, in_distribution=True, progress=progress)

    for i, job in enumerate(jobs, 1):
        name = f"[{i}/{len(jobs)}] {job.variant} seed {job.seed}"
        job_config = _with_time_budget(job, out_dir)
        if _trained(job_config):
            say(f"study: {name}: trained earlier, reusing {job.run_dir}")
        else:
            budget = (f"{job_config.train.max_seconds:.0f} s like {job.time_from}" if job.time_from
                      else f"{job_config.train.steps} steps")
            say(f"study: {name}: training ({budget})")
            for stale in ("summary.json", STUDY_EVAL):  # from an unfinished or differently configured run
                (job.run_dir / stale).unlink(missing_ok=True)
            _train(job_config, job.kind, progress)
        if not _evaluated(job.run_dir, config):
            checkpoint = latest_checkpoint(job.run_dir)
            if checkpoint is None:
                raise UserError(f"{job.run_dir}: finished run without a checkpoint; delete it to retrain")
            say(f"study: {name}: evaluating the final model")
            evaluate_model(str(checkpoint / "model"), config, job.run_dir, in_distribution=False, progress=progress)
    say(f"study: all runs done ({time.perf_counter() - start:.0f} s in this invocation)")
    return write_report(config, out_dir, jobs)
