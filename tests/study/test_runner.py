"""A tiny end-to-end study: it trains, evaluates, writes a self-contained report, and resumes without retraining."""

import base64
import json
from pathlib import Path

import pytest

from dashrl.cli import main
from dashrl.config import load_config
from dashrl.study.presets import plan
from dashrl.study.runner import _with_time_budget, passk_ks

PNG = b"\x89PNG\r\n\x1a\n"


def check_report_html(out: Path, elements):
    """report.html parses, holds its tables and embedded PNGs, references nothing outside the study directory."""
    page = elements((out / "report.html").read_text())
    assert len(page.all("table")) == 7  # 6 tables + sources
    images = page.all("img")
    assert len(images) == 4
    for img in images:
        prefix = "data:image/png;base64,"
        assert img["src"].startswith(prefix)
        assert base64.b64decode(img["src"][len(prefix):]).startswith(PNG)
    assert not page.all("script") and not page.all("link")
    for a in page.all("a"):
        assert not a["href"].startswith(("http:", "https:", "/")) and (out / a["href"]).exists(), a["href"]
    return page


def test_tiny_study_writes_the_report_and_resumes(tiny_study_args, html_elements, tmp_path, capsys):
    out, args = tmp_path / "study", tiny_study_args
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "study: [1/2] sft_h seed 0: training (2 steps)" in printed and "study: [2/2] dash seed 0: training" in printed
    assert "1. On-policy RL beats SFT:" in printed
    for name in ("report.md", "report.html", "report.json", "reward_vs_time.png", "completion_length.png",
                 "time_breakdown.png", "pass_at_k.png", "study.yaml"):
        assert (out / name).stat().st_size > 0, name
    assert all((out / p).read_bytes().startswith(PNG) for p in ("pass_at_k.png", "time_breakdown.png"))
    page = check_report_html(out, html_elements)
    assert "The paper's findings on this model and task" in "".join(page.text)

    # every number comes from the runs' own files: the DASH row is its summary.json and study_eval.json
    dash = out / "runs" / "dash" / "seed0"
    summary = json.loads((dash / "summary.json").read_text())
    study_eval = json.loads((dash / "study_eval.json").read_text())
    report = json.loads((out / "report.json").read_text())
    accuracy = report["tables"][0]
    row = next(r for r in accuracy["rows"] if r[0] == "DASH")
    assert row[2] == f"{summary['after']['greedy/pass@1'] * 100:.1f}"
    assert row[4] == f"{study_eval['out_of_distribution']['metrics']['greedy/pass@1'] * 100:.1f}"
    assert sorted(study_eval["pass_at_k"]["metrics"]) == ["greedy/mean_length", "greedy/pass@1", "sampled/mean_length",
                                                          "sampled/pass@1", "sampled/pass@2", "sampled/pass@4"]
    assert len((dash / "eval_passk.jsonl").read_text().splitlines()) == 2 * (1 + 4)  # greedy + 4 samples, 2 problems
    base = json.loads((out / "runs" / "base" / "study_eval.json").read_text())
    assert "in_distribution" in base and report["outcomes"]["base"]["accuracy"] == [base["in_distribution"]["metrics"]["greedy/pass@1"]]
    assert "[summary](runs/dash/seed0/summary.json)" in (out / "report.md").read_text()

    # the second run trains and evaluates nothing again, even when the config gained a field since (a saved
    # config.yaml without it loads with its default)
    saved = dash / "config.yaml"
    saved.write_text(saved.read_text().replace("  wandb_project: null\n", ""))
    stamps = {p: p.stat().st_mtime_ns for p in out.glob("runs/**/*.json")}
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "sft_h seed 0: trained earlier" in printed and "dash seed 0: trained earlier" in printed
    assert "training (" not in printed and "evaluating" not in printed
    assert {p: p.stat().st_mtime_ns for p in out.glob("runs/**/*.json")} == stamps

    # a study evaluation setting changed: the runs are re-evaluated, not retrained
    assert main([*args, "study.passk_samples=2"]) == 0
    printed = capsys.readouterr().out
    assert "training (" not in printed and printed.count("evaluating") == 3  # base + 2 runs


def test_report_only_needs_finished_runs(tmp_path, capsys):
    assert main(["study", "--report-only", "--out", str(tmp_path / "none")]) == 2
    assert "holds no study runs yet" in capsys.readouterr().err


def test_equal_time_job_gets_its_references_training_seconds(tmp_path):
    config = load_config(overrides=[f"study.out_dir={tmp_path}", "study.variants=[dash_no_kl,ppo_mini]"])
    timed = next(j for j in plan(config) if j.variant == "ppo_mini")
    reference = tmp_path / "runs" / "dash_no_kl" / "seed0"
    reference.mkdir(parents=True)
    (reference / "summary.json").write_text(json.dumps({"train_seconds": 123.45678}))
    assert _with_time_budget(timed, tmp_path).train.max_seconds == pytest.approx(123.457)


def test_passk_ks_double_up_to_the_samples():
    assert passk_ks(64) == [1, 2, 4, 8, 16, 32, 64]
    assert passk_ks(6) == [1, 2, 4, 6] and passk_ks(1) == [1]


def test_unknown_variant_is_one_error_line(tmp_path, capsys):
    assert main(["study", "--variants", "dash,sft-h", "--out", str(tmp_path / "s")]) == 2
    err = capsys.readouterr().err
    assert err == "dashrl: error: study.variants: unknown variant 'sft-h' (did you mean 'sft_h'?)\n"
    assert not (tmp_path / "s").exists()
