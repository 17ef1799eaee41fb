"""The study report: report.md, report.html, PNG plots and report.json, all from the runs' own logs.

Every number comes from a file in a run directory: summary.json (accuracy
before/after, training seconds), metrics.jsonl (seconds per stage, reward and
completion length per step) and study_eval.json (out-of-distribution accuracy,
pass@k). The report links to each of them with relative links, so the report
directory can be moved or archived as a whole.

Tables mirror the paper's: accuracy in and out of distribution per method;
time, total and per stage; PG vs PPO at equal time with the spread across
seeds; KL vs no KL (accuracy, time, completion length); pass@k. Under them, the
four findings with a verdict each (``dashrl.study.findings``).

report.html is self-contained: the plots are embedded as base64 PNG data URIs
and the only styling is an inline <style> block, so it opens offline.
Simplification: a variant with several seeds shows mean ± standard deviation
in the tables and its first seed in the curves.
"""

from __future__ import annotations

import base64
import html
import json
from dataclasses import dataclass, field
from pathlib import Path
from statistics import mean

import yaml

from dashrl.bench import SAMPLING_STAGES, UPDATE_STAGES, curve_vs_seconds, stage_seconds
from dashrl.config import Config
from dashrl.study import plots
from dashrl.models.loading import TESTBED_MODELS
from dashrl.study.findings import LABELS, TESTBED_FIDELITY, Finding, Outcome, findings, mean_sd
from dashrl.study.presets import SFT_PRESETS, Job, describe
from dashrl.study.rundir import BASE, STUDY_EVAL, load_run

STAGES = ("generation", "reward", "reference", "forward_backward", "optimizer", "weight_sync")
PLOTS = {
    "reward_vs_time.png": "Mean training reward against training seconds (RL variants, first seed)",
    "completion_length.png": "Mean completion length of the training samples against training seconds (RL variants, first seed)",
    "time_breakdown.png": "Training seconds per variant: sampling vs gradient updates (first seed)",
    "pass_at_k.png": "pass@k in distribution against k",
}


@dataclass(frozen=True)
class Link:
    text: str
    href: str


Cell = str | Link | list[Link]


@dataclass
class Table:
    title: str
    header: list[str]
    rows: list[list[Cell]]
    note: str = ""


@dataclass
class Run:
    """One run directory as the report reads it."""

    variant: str
    seed: int | None
    dir: Path  # relative to the report directory
    summary: dict | None
    study_eval: dict | None
    rows: list[dict]
    config: dict = field(default_factory=dict)

    @property
    def done(self) -> bool:
        return self.study_eval is not None and (self.variant == BASE or self.summary is not None)


# ---------------------------------------------------------------- gathering


def gather(out_dir: Path, jobs: list[Job]) -> dict[str, list[Run]]:
    """Every finished run, base first, then the variants in study order (seeds in order)."""
    found: dict[str, list[Run]] = {}
    wanted = [(BASE, None, out_dir / "runs" / BASE)] + [(j.variant, j.seed, j.run_dir) for j in jobs]
    for variant, seed, run_dir in wanted:
        data = load_run(run_dir)
        config_path = run_dir / "config.yaml"
        config = yaml.safe_load(config_path.read_text()) if config_path.is_file() else {}
        run = Run(variant, seed, run_dir.relative_to(out_dir), data["summary"], data["study_eval"], data["rows"], config)
        if run.done:
            found.setdefault(variant, []).append(run)
    order = [BASE] + list(dict.fromkeys(j.variant for j in jobs))
    return {name: sorted(found[name], key=lambda r: r.seed or 0) for name in order if name in found}


def _in_dist(run: Run) -> dict:
    """After-training in-distribution metrics (the base model's: the study's evaluation of it)."""
    if run.variant == BASE:
        return run.study_eval["in_distribution"]["metrics"]
    return run.summary["after"]


def _ood(run: Run) -> dict | None:
    ood = run.study_eval.get("out_of_distribution")
    return ood["metrics"] if ood else None


def _passk(run: Run) -> dict[int, float]:
    metrics = run.study_eval["pass_at_k"]["metrics"]
    return {int(k.split("@")[1]): v for k, v in metrics.items() if k.startswith("sampled/pass@")}


def _stage_sums(run: Run, names: tuple[str, ...]) -> float:
    stages = stage_seconds(run.rows)
    return sum(stages.get(s, 0.0) for s in names)


def outcome(name: str, runs: list[Run], problems: int) -> Outcome:
    """A variant's Outcome (for the findings) from its runs."""
    trained = [r for r in runs if r.summary is not None]
    return Outcome(
        name=name,
        accuracy=[_in_dist(r)["greedy/pass@1"] for r in runs],
        problems=problems,
        ood_accuracy=[_ood(r)["greedy/pass@1"] for r in runs if _ood(r)],
        train_seconds=[r.summary["train_seconds"] for r in trained],
        sampling_seconds=[_stage_sums(r, SAMPLING_STAGES) for r in trained],
        update_seconds=[_stage_sums(r, UPDATE_STAGES) for r in trained],
        mean_length=[_in_dist(r)["greedy/mean_length"] for r in runs],
    )


# ---------------------------------------------------------------- formatting


def _label(name: str) -> str:
    return LABELS.get(name, name)


def _metric(runs: list[Run], getter, key: str, scale: float = 100.0, digits: int = 1) -> str:
    values = [m[key] for m in (getter(r) for r in runs) if m and m.get(key) is not None]
    return mean_sd(values, scale, digits)


def _opt_steps(run: Run) -> int:
    """Optimizer steps taken: steps x K updates per sampled batch (1 for SFT), minus skipped (all-filtered) ones."""
    k = 1 if run.variant in SFT_PRESETS else run.config.get("algo", {}).get("updates_per_batch", 1)
    return round((run.summary["steps"] - run.summary.get("skipped_steps", 0.0)) * k)


# ---------------------------------------------------------------- tables


def accuracy_table(data: dict[str, list[Run]]) -> Table:
    rows = []
    for name, runs in data.items():
        trained = [r for r in runs if r.summary]
        rows.append([_label(name), str(len(runs)) if name != BASE else "-",
                     _metric(runs, _in_dist, "greedy/pass@1"), _metric(runs, _in_dist, "sampled/pass@1"),
                     _metric(runs, _ood, "greedy/pass@1"), _metric(runs, _ood, "sampled/pass@1"),
                     mean_sd([r.summary["train_seconds"] for r in trained], 1.0, 0)])
    return Table("Accuracy in and out of distribution",
                 ["method", "seeds", "in-dist greedy pass@1 %", "in-dist sampled pass@1 %", "OOD greedy pass@1 %",
                  "OOD sampled pass@1 %", "training s"], rows,
                 "After training; base = the starting model. Several seeds: mean ± std.")


def time_table(data: dict[str, list[Run]]) -> Table:
    rows = []
    grpo = data.get("grpo")
    grpo_s = mean(r.summary["train_seconds"] for r in grpo) if grpo else None
    for name, runs in data.items():
        trained = [r for r in runs if r.summary]
        if not trained:
            continue
        stages = [stage_seconds(r.rows) for r in trained]
        total = [r.summary["train_seconds"] for r in trained]
        sampling = [sum(s.get(x, 0.0) for x in SAMPLING_STAGES) for s in stages]
        cells = [_label(name), mean_sd([_opt_steps(r) for r in trained], 1.0, 0), mean_sd(total, 1.0, 1),
                 mean_sd([t / max(_opt_steps(r), 1) for t, r in zip(total, trained)], 1.0, 2)]
        cells += [f"{mean(s.get(stage, 0.0) for s in stages):.1f}" for stage in STAGES]
        cells.append(mean_sd([a / t for a, t in zip(sampling, total) if t > 0], 100.0, 0))
        cells.append(f"{mean(total) / grpo_s * 100:.0f}%" if grpo_s else "-")
        rows.append(cells)
    return Table("Time per method (training seconds, total and per stage)",
                 ["method", "optimizer steps", "training s", "s per optimizer step", *STAGES, "sampling %",
                  "time vs GRPO"], rows,
                 "Evaluation and checkpoints excluded. Sampling = generation + reward; for SFT-M it is the teacher's "
                 "sampling and verification. Several seeds: mean ± std (stage columns: mean).")


def ppo_table(data: dict[str, list[Run]]) -> Table:
    rows = []
    for name in ("dash_no_kl", "dash", "ppo_multi", "ppo_mini"):
        runs = data.get(name)
        if not runs or (name == "dash" and "dash_no_kl" in data):
            continue
        algo = runs[0].config.get("algo", {})
        acc = [_in_dist(r)["greedy/pass@1"] for r in runs]
        rows.append([_label(name), str(algo.get("prompts_per_step", "-")), str(algo.get("updates_per_batch", "-")),
                     str(len(runs)), mean_sd([r.summary["train_seconds"] for r in runs], 1.0, 0),
                     mean_sd([_opt_steps(r) for r in runs], 1.0, 0), mean_sd(acc),
                     f"{min(acc) * 100:.1f}", f"{max(acc) * 100:.1f}",
                     f"{(max(acc) - min(acc)) * 100:.1f}" if len(acc) > 1 else "-",
                     _metric(runs, _ood, "greedy/pass@1")])
    return Table("Policy gradient vs PPO (equal training time)",
                 ["method", "M prompts", "K updates", "seeds", "training s", "optimizer steps", "in-dist greedy pass@1 %",
                  "min %", "max %", "spread (points)", "OOD greedy pass@1 %"], rows,
                 "Stability = spread of final accuracy across seeds (max - min).")


def kl_table(data: dict[str, list[Run]]) -> Table:
    rows = []
    for name in ("dash", "dash_no_kl"):
        runs = data.get(name)
        if not runs:
            continue
        beta = runs[0].config.get("algo", {}).get("beta", "-")
        train_len = []
        for r in runs:  # mean training completion length over the last 10% of steps
            curve = curve_vs_seconds(r.rows, "completion/mean_length")
            tail = curve[-max(1, len(curve) // 10):]
            train_len.append(mean(y for _, y in tail) if tail else None)
        rows.append([_label(name), str(beta), _metric(runs, _in_dist, "greedy/pass@1"), _metric(runs, _ood, "greedy/pass@1"),
                     mean_sd([r.summary["train_seconds"] for r in runs], 1.0, 0),
                     mean_sd([stage_seconds(r.rows).get("reference", 0.0) for r in runs], 1.0, 1),
                     mean_sd([x for x in train_len if x is not None], 1.0, 1),
                     _metric(runs, _in_dist, "greedy/mean_length", 1.0)])
    return Table("KL vs no KL", ["method", "beta", "in-dist greedy pass@1 %", "OOD greedy pass@1 %", "training s",
                                 "reference-model s", "training completion length (last 10% of steps)",
                                 "eval greedy length"], rows, "Lengths in tokens.")


def passk_table(data: dict[str, list[Run]]) -> Table:
    ks = sorted({k for runs in data.values() for k in _passk(runs[0])})
    rows = [[_label(name), *[mean_sd([_passk(r).get(k) for r in runs if k in _passk(r)]) for k in ks]]
            for name, runs in data.items()]
    first = next(iter(data.values()))[0].study_eval["pass_at_k"]
    return Table("pass@k in distribution", ["method", *[f"pass@{k} %" for k in ks]], rows,
                 f"{first['samples']} samples per problem at temperature {first['temperature']} on "
                 f"{first['problems']} problems; unbiased estimator (Chen et al. 2021).")


def methods_table(data: dict[str, list[Run]]) -> Table:
    """What each method is and the settings that define it, read from its first run's config.yaml."""
    rows = []
    for name, runs in data.items():
        if name == BASE:
            continue
        cfg = runs[0].config
        algo, train = cfg.get("algo", {}), cfg.get("train", {})
        if name in SFT_PRESETS:
            sft = cfg.get("sft", {})
            data_from = "reference solutions" if sft.get("source") == "reference" else f"teacher {sft.get('teacher')}"
            rows.append([_label(name), describe(name), f"SFT on {data_from}, {sft.get('batch_size')} examples per step",
                         "1", "-", "-", "-", str(train.get("micro_batch_size")), str(train.get("steps"))])
            continue
        budget = f"{train['max_seconds']:.0f} s" if train.get("max_seconds") else str(train.get("steps"))
        rows.append([_label(name), describe(name), f"{algo.get('prompts_per_step')} x {algo.get('group_size')}",
                     str(algo.get("updates_per_batch")), str(algo.get("beta")), _yaml_cell(algo.get("filter_tau")),
                     str(train.get("generation_batch_size") or "whole step"), str(train.get("micro_batch_size")), budget])
    return Table("Methods and the settings that define them",
                 ["method", "what", "M prompts x G completions", "K updates", "KL beta", "filter tau", "engine batch",
                  "micro-batch", "budget (sampled batches or seconds)"], rows,
                 "filter tau: none = no gradient filtering; 0 = drop the groups whose rewards are all equal (DASH).")


def _yaml_cell(value) -> str:
    return "none" if value is None else str(value)


def sources_table(data: dict[str, list[Run]]) -> Table:
    rows = []
    for name, runs in data.items():
        for r in runs:
            d = r.dir.as_posix()
            files = [("config.yaml", "config"), ("metrics.jsonl", "metrics"), ("summary.json", "summary"),
                     (STUDY_EVAL, "study evaluation")]
            cells: list[Cell] = [_label(name) + (f" seed {r.seed}" if r.seed is not None else "")]
            for file, text in files:
                present = (file == "config.yaml" and r.config) or (file == "metrics.jsonl" and r.rows) or \
                          (file == "summary.json" and r.summary) or (file == STUDY_EVAL)
                cells.append(Link(text, f"{d}/{file}") if present else "-")
            records = [v["records"] for v in r.study_eval.values() if isinstance(v, dict) and "records" in v]
            cells.append([Link(x, f"{d}/{x}") for x in records])
            rows.append(cells)
    return Table("Sources (every number above is read from these files)",
                 ["run", "config", "metrics", "summary", "study evaluation", "per-completion records"], rows)


# ---------------------------------------------------------------- the whole report


def fidelity_notes(config: Config) -> dict[int, str] | None:
    """Where each finding's setting is and is not like the paper's: known for the built-in testbeds only."""
    return TESTBED_FIDELITY if config.model.path in TESTBED_MODELS and config.task.name == "testbed" else None


def build(config: Config, out_dir: Path, jobs: list[Job]) -> dict:
    """Gather, compute findings, draw plots; returns the report's content (also written as report.json)."""
    data = gather(out_dir, jobs)
    if BASE not in data:
        return {"tables": [], "findings": [], "plots": [], "header": ["No finished runs yet."], "outcomes": {}}
    problems = data[BASE][0].study_eval["in_distribution"]["problems"]
    outcomes = {name: outcome(name, runs, problems) for name, runs in data.items()}
    found = findings(outcomes, fidelity_notes(config))
    tables = [accuracy_table(data), time_table(data), ppo_table(data), kl_table(data), passk_table(data),
              methods_table(data)]
    tables = [t for t in tables if t.rows]  # e.g. no PPO table in a study without PPO variants
    drawn = draw_plots(data, out_dir)
    header = _header(config, data, jobs)
    return {"header": header, "findings": found, "tables": tables, "plots": drawn, "sources": sources_table(data),
            "outcomes": {n: vars(o) for n, o in outcomes.items()}}


def _header(config: Config, data: dict[str, list[Run]], jobs: list[Job]) -> list[str]:
    study = config.study
    timed = sorted({j.variant for j in jobs if j.time_from})
    budget = f"equal optimizer steps ({config.train.steps})"
    if timed:
        budget += f"; {', '.join(timed)}: the training time of {study.time_reference} (same seed)"
    wall = sum(r.summary["wall_seconds"] for runs in data.values() for r in runs if r.summary)
    evals = sum(r.study_eval.get("seconds", 0.0) for runs in data.values() for r in runs)
    n_runs = sum(1 for runs in data.values() for r in runs if r.summary)
    expected = len(jobs)
    lines = [
        f"Model: {config.model.path}. Task: {config.task.name} (in distribution); "
        f"{study.ood_task or 'none'} (out of distribution).",
        f"Budget: {budget}. Seeds: {', '.join(map(str, study.seeds))}.",
        f"Runs finished: {n_runs} of {expected}. Time in runs and evaluations: {(wall + evals) / 60:.1f} min "
        f"({wall:.0f} s of training runs with their own evaluations, {evals:.0f} s of study evaluations; "
        "building the testbed models on first use not included).",
    ]
    if n_runs < expected:
        lines.append("Some runs are missing: run `dashrl study` again to finish them (finished ones are kept).")
    return lines


def draw_plots(data: dict[str, list[Run]], out_dir: Path) -> list[str]:
    rl = {name: runs[0] for name, runs in data.items()
          if runs[0].summary and any("reward/mean" in row for row in runs[0].rows)}
    trained = {name: runs[0] for name, runs in data.items() if runs[0].summary}
    drawn = []
    if rl:
        plots.reward_vs_time({_label(n): curve_vs_seconds(r.rows, "reward/mean") for n, r in rl.items()},
                             out_dir / "reward_vs_time.png")
        plots.length_vs_time({_label(n): curve_vs_seconds(r.rows, "completion/mean_length") for n, r in rl.items()},
                             out_dir / "completion_length.png")
        drawn += ["reward_vs_time.png", "completion_length.png"]
    if trained:
        seconds = {}
        for name, r in trained.items():
            stages = stage_seconds(r.rows)
            seconds[_label(name)] = {"sampling_seconds": sum(stages.get(s, 0.0) for s in SAMPLING_STAGES),
                                     "update_seconds": sum(stages.get(s, 0.0) for s in UPDATE_STAGES),
                                     "train_seconds": r.summary["train_seconds"]}
        plots.time_breakdown(seconds, out_dir / "time_breakdown.png")
        drawn.append("time_breakdown.png")
    plots.pass_at_k({_label(n): _passk(runs[0]) for n, runs in data.items()}, out_dir / "pass_at_k.png")
    drawn.append("pass_at_k.png")
    return drawn


NOTES = [
    "A difference in the findings counts only beyond 2 standard errors of the difference of two means across "
    "seeds (sample standard deviation / sqrt(seeds)); for accuracy each standard error is at least the evaluation's "
    "binomial one, sqrt(p(1-p)/(problems x seeds)); times and lengths need 2+ seeds. A length counts as shorter only "
    "if it is also at least 1% shorter. The rules are in dashrl/study/findings.py.",
    "Times are wall-clock seconds as measured on this machine; on a shared machine they vary with its load, "
    "and equal-time budgets inherit that.",
    "Sizes follow the paper scaled to the model and task: see dashrl/study/presets.py and the study config's comments.",
]


def write_report(config: Config, out_dir: Path, jobs: list[Job]) -> dict:
    """Write report.md, report.html, report.json and the plots into ``out_dir``; returns the content."""
    content = build(config, out_dir, jobs)
    title = f"dashrl study: model {config.model.path}, task {config.task.name}"
    (out_dir / "report.md").write_text(render_markdown(title, content))
    (out_dir / "report.html").write_text(render_html(title, content, out_dir))
    (out_dir / "report.json").write_text(json.dumps(_jsonable(content), indent=2) + "\n")
    return content


def _jsonable(content: dict) -> dict:
    def cell(c):
        if isinstance(c, list):
            return [x.href for x in c]
        return c.href if isinstance(c, Link) else c

    def table(t: Table):
        return {"title": t.title, "header": t.header, "rows": [[cell(c) for c in row] for row in t.rows], "note": t.note}

    return {"header": content["header"], "findings": [f.line() for f in content["findings"]],
            "fidelity": [f.fidelity for f in content["findings"]],
            "tables": [table(t) for t in content["tables"]], "plots": content["plots"],
            "outcomes": content["outcomes"]}


def console_summary(content: dict) -> str:
    """What ``dashrl study`` prints: the header, the accuracy table and the findings."""
    parts = [*content["header"], ""]
    if content["tables"]:
        parts += [markdown_table(content["tables"][0]), ""]
    parts += [f.line() for f in content["findings"]]
    return "\n".join(parts)


# ---------------------------------------------------------------- rendering


def _md_cell(c: Cell) -> str:
    if isinstance(c, list):
        return ", ".join(_md_cell(x) for x in c)
    text = f"[{c.text}]({c.href})" if isinstance(c, Link) else c
    return text.replace("|", "\\|")


def markdown_table(t: Table) -> str:
    lines = [f"### {t.title}", "", "| " + " | ".join(t.header) + " |", "|" + "---|" * len(t.header)]
    lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in t.rows]
    if t.note:
        lines += ["", t.note]
    return "\n".join(lines)


def render_markdown(title: str, content: dict) -> str:
    parts = [f"# {title}", "", *[f"{line}  " for line in content["header"]], ""]
    if content["findings"]:
        parts += ["## The paper's findings on this model and task", ""]
        for f in content["findings"]:
            parts += [f"{f.line()}  "] + ([f"   *Testbed vs paper:* {f.fidelity}", ""] if f.fidelity else [""])
    if content["tables"]:
        parts += ["## Tables", ""]
        parts += [markdown_table(t) + "\n" for t in content["tables"]]
    if content["plots"]:
        parts += ["## Plots", ""]
        parts += [f"![{PLOTS[p]}]({p})\n\n{PLOTS[p]}\n" for p in content["plots"]]
    if content.get("sources"):
        parts += ["## Notes", "", *[f"- {n}" for n in NOTES], "", markdown_table(content["sources"]), ""]
    return "\n".join(parts)


STYLE = """
body { font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 0.3em; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; }
td.num { text-align: right; }
th { background: #f2f2f2; }
.note { color: #555; font-size: 0.85em; margin-bottom: 1.5em; }
.verdict { font-weight: bold; }
img { max-width: 100%; border: 1px solid #ddd; }
.scroll { overflow-x: auto; }
figure { margin: 1em 0; }
"""


def _html_cell(c: Cell) -> str:
    if isinstance(c, list):
        return ", ".join(_html_cell(x) for x in c)
    if isinstance(c, Link):
        return f'<a href="{html.escape(c.href)}">{html.escape(c.text)}</a>'
    return html.escape(c)


def _numeric(c: Cell) -> str:
    """Right-align cells that hold a number ('52.1', '35.6 ± 0.8', '39%', '341 s')."""
    return ' class="num"' if isinstance(c, str) and c[:1].isdigit() else ""


def html_table(t: Table) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in t.header)
    body = "".join("<tr>" + "".join(f"<td{_numeric(c)}>{_html_cell(c)}</td>" for c in row) + "</tr>" for row in t.rows)
    note = f'<p class="note">{html.escape(t.note)}</p>' if t.note else ""
    return (f'<h3>{html.escape(t.title)}</h3>\n<div class="scroll"><table><thead><tr>{head}</tr></thead>'
            f"<tbody>{body}</tbody></table></div>{note}")


def _finding_html(f: Finding) -> str:
    fidelity = f'<br><span class="note">Testbed vs paper: {html.escape(f.fidelity)}</span>' if f.fidelity else ""
    return (f"<li>{html.escape(f.claim)}: <span class=\"verdict\">{html.escape(f.verdict)}</span> "
            f"({html.escape(f.evidence)}){fidelity}</li>")


def render_html(title: str, content: dict, out_dir: Path) -> str:
    parts = [f"<h1>{html.escape(title)}</h1>"]
    parts += [f"<p>{html.escape(line)}</p>" for line in content["header"]]
    if content["findings"]:
        parts.append("<h2>The paper's findings on this model and task</h2>")
        parts.append("<ol>" + "".join(_finding_html(f) for f in content["findings"]) + "</ol>")
    if content["tables"]:
        parts.append("<h2>Tables</h2>")
        parts += [html_table(t) for t in content["tables"]]
    if content["plots"]:
        parts.append("<h2>Plots</h2>")
        for name in content["plots"]:
            data = base64.b64encode((out_dir / name).read_bytes()).decode()
            parts.append(f'<figure><img alt="{html.escape(PLOTS[name])}" src="data:image/png;base64,{data}">'
                         f"<figcaption>{html.escape(PLOTS[name])}</figcaption></figure>")
    if content.get("sources"):
        parts.append("<h2>Notes</h2><ul>" + "".join(f"<li>{html.escape(n)}</li>" for n in NOTES) + "</ul>")
        parts.append(html_table(content["sources"]))
    body = "\n".join(parts)
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            f"<style>{STYLE}</style></head>\n<body>\n{body}\n</body></html>\n")
