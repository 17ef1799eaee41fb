"""The ``dashrl`` command: ``train``, ``eval``, ``bench``, ``tune``, ``sft`` and ``study``.

    dashrl train [CONFIG.yaml] [key=value ...] [--resume RUN_DIR | --overwrite] [--nproc N]
    dashrl eval  [CONFIG.yaml] [key=value ...] [--checkpoint DIR] [--out FILE.jsonl]
    dashrl bench [CONFIG.yaml] [key=value ...] [--variants grpo,preemptive,dash] [--out DIR]
    dashrl tune  [CONFIG.yaml] [key=value ...] [--write OUT.yaml] [--max-batch N] [--max-micro N] [--quick]
    dashrl sft   [CONFIG.yaml] [key=value ...]                  (sft.source=reference | teacher)
    dashrl study [CONFIG.yaml] [key=value ...] [--variants sft_h,dash,...] [--out DIR] [--report-only]

Bad input (unknown key, bad value, missing file or model, ...) prints one line
``dashrl: error: ...`` and exits with code 2, before anything is written
(tests/test_bad_inputs.py holds the cases). Options may sit anywhere among the
``key=value`` overrides. ``train`` stopped by SIGINT / SIGTERM / SIGHUP saves
its last completed step and exits with 128 + the signal number (130 / 143 / 129).
"""

from __future__ import annotations

import argparse
import json
import shlex
import signal
import sys
from pathlib import Path

from dashrl.errors import UserError


def _split_args(items: list[str]) -> tuple[str | None, list[str]]:
    """The optional config path (first item without '=') and the key=value overrides."""
    config, overrides = None, []
    for item in items:
        if "=" in item:
            overrides.append(item)
        elif config is None:
            config = item
        else:
            raise UserError(f"unexpected argument '{item}' (overrides are key=value)")
    return config, overrides


def _progress(args: argparse.Namespace, config) -> bool:
    """Bars on unless --no-progress or log.progress=false; applied to the libraries' own bars too."""
    from dashrl.progress import resolve, set_library_progress

    progress = resolve(False if args.no_progress else None, config.log.progress)
    set_library_progress(progress)
    return progress


def _without_nproc(argv: list[str]) -> list[str]:
    """The command line minus ``--nproc N`` / ``--nproc=N`` (what each launched process runs)."""
    out, skip = [], False
    for item in argv:
        if skip:
            skip = False
        elif item == "--nproc":
            skip = True
        elif not item.startswith("--nproc="):
            out.append(item)
    return out


def cmd_train(args: argparse.Namespace) -> int:
    from dashrl.config import load_config
    from dashrl.rollout.factory import close_engine
    from dashrl.train.distributed import launch_local, launched_by_torchrun
    from dashrl.train.run import format_summary, prepare, resume_config, train
    from dashrl.train.rundir import check_run_dir, clear_run_dir
    from dashrl.train.signals import exit_code

    config_path, overrides = _split_args(args.items)
    if args.resume and args.overwrite:
        raise UserError("--resume continues a run and --overwrite clears it; give one of them")
    if args.resume:
        if config_path:
            raise UserError("--resume takes the run's own config; pass only key=value overrides")
        config = resume_config(Path(args.resume), overrides)
    else:
        config = load_config(config_path, overrides)
    run_dir = Path(config.log.run_dir)
    check_run_dir(run_dir, resume=bool(args.resume), overwrite=args.overwrite)
    progress = _progress(args, config)
    if args.nproc is not None:
        if args.nproc < 1:
            raise UserError(f"--nproc must be at least 1, got {args.nproc}")
        if launched_by_torchrun():
            raise UserError("--nproc starts the processes itself; under torchrun, leave it out")
        if args.nproc > 1:  # config checked above; build or fetch the model once, then start N processes
            from dashrl.models import resolve_model_path

            resolve_model_path(config.model.path, progress=progress)
            same_dir = [] if args.resume else [f"log.run_dir={run_dir}"]  # not a timestamp of each process's own
            return launch_local(args.nproc, _without_nproc(args.argv) + same_dir)
    setup = prepare(config, resume=bool(args.resume), progress=progress)
    if setup.trainer.dist.is_main:
        if args.overwrite:
            clear_run_dir(run_dir)
        print(f"run directory: {run_dir}", file=sys.stderr, flush=True)
    try:
        summary = train(setup, progress=progress)
    finally:
        close_engine(setup.trainer.engine)
        setup.trainer.dist.close()
    if summary is None:  # a process other than 0 of a multi-process run
        return 0
    print(format_summary(summary))
    print(f"run directory: {run_dir}")
    if summary.get("interrupted"):
        name = summary["interrupted"]
        print(f"dashrl: {name}: stopped after step {setup.trainer.step} of {config.train.steps}, checkpoint saved; "
              f"continue with: dashrl train --resume {run_dir}", file=sys.stderr)
        return exit_code(signal.Signals[name])
    return 0


def _task_model_tokenizer(config, model_path: str, progress: bool):
    """The configured task, a model + tokenizer and the resolved model path (validated before anything loads)."""
    from dashrl.models import load_model, load_tokenizer, resolve_model_path
    from dashrl.models.device import resolve_device
    from dashrl.rollout.factory import check_engine
    from dashrl.tasks import get_task

    check_engine(config)
    task = get_task(config.task)
    device = resolve_device(config.model.device)
    path = resolve_model_path(model_path, progress=progress)
    return task, load_model(path, config.model.dtype).to(device), load_tokenizer(path), path


def cmd_eval(args: argparse.Namespace) -> int:
    from dashrl.config import load_config
    from dashrl.eval.evaluate import evaluate
    from dashrl.rollout.factory import close_engine, make_engine
    from dashrl.rollout.hf_engine import HFEngine
    from dashrl.tasks.prompts import prompt_formatter

    from dashrl.models.context import check_prompt_lengths
    from dashrl.train.rundir import check_writable

    config_path, overrides = _split_args(args.items)
    config = load_config(config_path, overrides)
    if args.out:  # before the work, not after it
        if Path(args.out).is_dir():
            raise UserError(f"--out {args.out}: is a directory; give a file name such as eval.jsonl")
        check_writable(Path(args.out).parent, "--out")
    progress = _progress(args, config)
    task, model, tokenizer, path = _task_model_tokenizer(config, args.checkpoint or config.model.path, progress)
    format_prompt = prompt_formatter(config.task, tokenizer)
    problems = task.eval_problems(config.eval.num_problems, config.task.eval_seed)
    check_prompt_lengths(model, tokenizer, format_prompt, config.sampling.max_new_tokens, problems)
    engine = HFEngine(model, tokenizer) if config.rollout.engine == "hf" else make_engine(config, path, model, tokenizer)
    try:
        result = evaluate(engine, task, problems, config.eval, config.sampling.max_new_tokens,
                          format_prompt=format_prompt, progress=progress)
    finally:
        close_engine(engine)
    print(f"{'metric':<24}{'value':>10}")
    for key, value in result.metrics.items():
        print(f"{key:<24}{value if 'length' in key else value * 100:>10.1f}")
    if args.out:
        out = Path(args.out)
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text("".join(json.dumps(r) + "\n" for r in result.records))
        except OSError as exc:
            raise UserError(f"--out {out}: cannot write it ({exc.strerror or exc})") from None
        print(f"per-problem results: {out}")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from dashrl.bench import format_table, run_bench
    from dashrl.config import load_config

    config_path, overrides = _split_args(args.items)
    config = load_config(config_path, overrides)
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    out = Path(args.out)
    progress = _progress(args, config)
    if isinstance(config.bench.model_shape, list):  # several shapes: the time ratio against model size
        from dashrl.scaling import format_scaling, run_scaling

        words = [*args.items, "--variants", args.variants, "--out", args.out, "--paper-micro-batch", str(args.paper_micro_batch)]
        result = run_scaling(config, variants, out, progress=progress, paper_micro_batch=args.paper_micro_batch,
                             command="dashrl bench " + " ".join(shlex.quote(w) for w in words))
        print(format_scaling(result))
        print(f"scaling.json, scaling.md in {out} (each shape's bench in its own folder)")
        return 0
    report = run_bench(config, variants, out, progress=progress, paper_micro_batch=args.paper_micro_batch)
    print(format_table(report))
    print(f"bench.json, bench.md, breakdown.png, reward_vs_time.png in {out}")
    return 0


def cmd_tune(args: argparse.Namespace) -> int:
    from dashrl import tune
    from dashrl.config import load_config
    from dashrl.progress import progress_bar
    from dashrl.rollout.factory import close_engine, make_engine

    config_path, overrides = _split_args(args.items)
    config = load_config(config_path, overrides)
    for flag, value in (("--max-batch", args.max_batch), ("--max-micro", args.max_micro)):
        if value is not None and value < 1:
            raise UserError(f"{flag} must be at least 1, got {value}")
    if args.write and Path(args.write).is_dir():
        raise UserError(f"--write {args.write}: is a directory; give a file name such as tuned.yaml")
    progress = _progress(args, config)
    gen_sizes, micro_sizes = tune.planned_sizes(config, args.max_batch, args.max_micro, args.quick)
    task, model, tokenizer, path = _task_model_tokenizer(config, config.model.path, progress)
    if config.model.lora.enabled:  # measure the backward pass training will run: through the adapters
        from dashrl.models.lora import apply_lora

        model = apply_lora(model, config.model.lora)
    engine = make_engine(config, path, model, tokenizer)  # rollout.engine: the curve of the engine training uses
    try:
        with progress_bar(len(gen_sizes) + 1 + len(micro_sizes), "tune", progress) as bar:
            def report(line: str) -> None:
                bar.set_postfix_str(line)
                bar.update(1)

            result = tune.tune(config, model, tokenizer, engine, task, max_batch=args.max_batch,
                               max_micro=args.max_micro, quick=args.quick, progress=report)
    finally:
        close_engine(engine)
    rec = result["recommendation"]
    print(f"engine: {config.rollout.engine}")
    print(tune.format_curves(result["generation"], result["training"], rec, mode=result["mode"]))
    print()
    print(tune.format_recommendation(rec))
    if args.write:
        print(f"tuned config: {tune.write_tuned_config(config, rec, args.write)}")
    return 0


def cmd_sft(args: argparse.Namespace) -> int:
    from dashrl.config import load_config
    from dashrl.train.run import format_summary
    from dashrl.train.rundir import check_run_dir, clear_run_dir
    from dashrl.train.sft import prepare_sft, train_sft
    from dashrl.train.signals import exit_code

    config_path, overrides = _split_args(args.items)
    config = load_config(config_path, overrides)
    check_run_dir(Path(config.log.run_dir), overwrite=args.overwrite)
    progress = _progress(args, config)
    setup = prepare_sft(config, progress=progress)
    if args.overwrite:
        clear_run_dir(Path(config.log.run_dir))
    print(f"run directory: {config.log.run_dir}", file=sys.stderr, flush=True)
    summary = train_sft(setup, progress=progress)
    print(format_summary(summary).replace("before RL", "before SFT").replace("after RL", "after SFT"))
    print(f"run directory: {config.log.run_dir}")
    if summary.get("interrupted"):
        name = summary["interrupted"]
        print(f"dashrl: {name}: SFT stopped after step {summary.get('steps', 0)} of {config.train.steps}; the model "
              f"trained so far is in {config.log.run_dir}/checkpoints (SFT runs do not resume: rerun to redo it)",
              file=sys.stderr)
        return exit_code(signal.Signals[name])
    return 0


def cmd_study(args: argparse.Namespace) -> int:
    from dashrl.config import Config, load_config, with_overrides
    from dashrl.study.presets import TESTBED_STUDY
    from dashrl.study.runner import run_study
    from dashrl.study.report import console_summary

    config_path, overrides = _split_args(args.items)
    if args.variants is not None:
        overrides.append(f"study.variants=[{args.variants}]")
    if args.out is not None:
        overrides.append(f"study.out_dir={args.out}")
    if config_path is None:  # the built-in testbed study (configs/study.yaml)
        config = with_overrides(Config.model_validate(TESTBED_STUDY), overrides)
    else:
        config = load_config(config_path, overrides)
    progress = _progress(args, config)
    content = run_study(config, progress=progress, report_only=args.report_only)
    print(console_summary(content))
    print(f"report: {Path(config.study.out_dir) / 'report.html'} (and report.md)")
    return 0


class _Parser(argparse.ArgumentParser):
    """argparse with our one-line errors (``dashrl: error: ...``, exit 2) instead of usage + message."""

    def error(self, message: str):
        raise UserError(f"{message} (see {self.prog} --help)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="dashrl", description="RL for language-model reasoning, with DASH.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    train = sub.add_parser("train", help="train a policy with RL (default: the built-in testbed)")
    train.add_argument("items", nargs="*", help="optional CONFIG.yaml, then key=value overrides")
    train.add_argument("--resume", metavar="RUN_DIR", help="continue a run from its last checkpoint")
    train.add_argument("--overwrite", action="store_true", help="clear log.run_dir if it holds an earlier run")
    train.add_argument("--no-progress", action="store_true", help="no progress bars")
    train.add_argument("--nproc", type=int, metavar="N", help="train with N data-parallel processes on this machine "
                       "(one per GPU, or CPU cores split between them); several machines: use torchrun")
    train.set_defaults(func=cmd_train)
    ev = sub.add_parser("eval", help="evaluate a model on held-out problems")
    ev.add_argument("items", nargs="*", help="optional CONFIG.yaml, then key=value overrides")
    ev.add_argument("--checkpoint", metavar="DIR", help="model directory to evaluate (default: model.path)")
    ev.add_argument("--out", metavar="FILE", help="write per-problem results as JSONL")
    ev.add_argument("--no-progress", action="store_true", help="no progress bars")
    ev.set_defaults(func=cmd_eval)
    tu = sub.add_parser("tune", help="measure generation and training batch curves, recommend batch sizes")
    tu.add_argument("items", nargs="*", help="optional CONFIG.yaml, then key=value overrides")
    tu.add_argument("--write", metavar="OUT.yaml", help="write the config with the recommended batch sizes")
    tu.add_argument("--max-batch", type=int, metavar="N", help="largest generation batch measured (default max(M x G, 8))")
    tu.add_argument("--max-micro", type=int, metavar="N", help="largest training micro-batch measured "
                    "(default min(64, M x G); 16 with --quick)")
    tu.add_argument("--quick", action="store_true", help="one timed pass per size, micro-batches up to 16")
    tu.add_argument("--no-progress", action="store_true", help="no progress output")
    tu.set_defaults(func=cmd_tune)
    bench = sub.add_parser("bench", help="standard GRPO vs preemptive sampling vs DASH on the same work")
    bench.add_argument("items", nargs="*", help="optional CONFIG.yaml, then key=value overrides")
    bench.add_argument("--variants", default="grpo,grpo_tuned,preemptive,dash", help="comma-separated variants")
    bench.add_argument("--out", default="runs/bench", help="output directory")
    bench.add_argument("--paper-micro-batch", type=int, default=4, help="micro-batch of the 'grpo' baseline")
    bench.add_argument("--no-progress", action="store_true", help="no progress bars")
    bench.set_defaults(func=cmd_bench)
    sft = sub.add_parser("sft", help="supervised fine-tuning: reference solutions (SFT-H) or a teacher's verified samples (SFT-M)")
    sft.add_argument("items", nargs="*", help="optional CONFIG.yaml, then key=value overrides")
    sft.add_argument("--overwrite", action="store_true", help="clear log.run_dir if it holds an earlier run")
    sft.add_argument("--no-progress", action="store_true", help="no progress bars")
    sft.set_defaults(func=cmd_sft)
    study = sub.add_parser("study", help="the paper's study: SFT vs RL, PG vs PPO, KL vs no KL, GRPO vs DASH, with a report")
    study.add_argument("items", nargs="*", help="optional CONFIG.yaml (default: the testbed study, configs/study.yaml), "
                       "then key=value overrides")
    study.add_argument("--variants", help="comma-separated variants (sets study.variants)")
    study.add_argument("--out", help="output directory (sets study.out_dir)")
    study.add_argument("--report-only", action="store_true", help="write the report from the finished runs, train nothing")
    study.add_argument("--no-progress", action="store_true", help="no progress bars")
    study.set_defaults(func=cmd_study)
    return parser


def _quiet_libraries() -> None:
    """Our own progress bars only: silence transformers' per-call bars and notices (dashrl.progress does the rest)."""
    from huggingface_hub.utils import logging as hub_logging
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    hub_logging.set_verbosity_error()  # offline hub look-ups: our one-line error says it


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Options may sit anywhere among the ``key=value`` items (intermixed parsing, per subcommand)."""
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    if argv and argv[0] in commands:
        args = commands[argv[0]].parse_intermixed_args(argv[1:])
        args.command = argv[0]
        return args
    return parser.parse_args(argv)  # --help, or a missing / unknown command


def main(argv: list[str] | None = None) -> int:
    try:
        args = parse_args(argv)
    except UserError as exc:
        print(f"dashrl: error: {exc}", file=sys.stderr)
        return 2
    args.argv = list(sys.argv[1:] if argv is None else argv)
    _quiet_libraries()
    try:
        return args.func(args)
    except UserError as exc:
        print(f"dashrl: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:  # Ctrl-C outside a training loop, or a study / bench stopped by a signal
        print(f"dashrl: interrupted{f' by {exc}' if str(exc) else ''}", file=sys.stderr)
        return getattr(exc, "exit_code", 130)
    except Exception as exc:  # a multi-process run: a process failed, or a collective timed out
        from dashrl.train.distributed import DistributedFailure, describe_failure

        line = str(exc) if isinstance(exc, DistributedFailure) else describe_failure(exc)
        if line is None:
            raise
        print(f"dashrl: error: {line}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
