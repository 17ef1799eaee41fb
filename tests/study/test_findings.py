"""Verdicts on the paper's four findings, decided on hand-made outcomes with the arithmetic written out."""

from pathlib import Path

import pytest

from dashrl.study.findings import Outcome, accuracy_gap, findings, no_kl_is_better, ppo_faster_but_unstable, \
    rl_beats_sft, sampling_is_bottleneck
from dashrl.study.report import Run, outcome


def _o(name, accuracy, problems=1024, **kw):
    return Outcome(name, accuracy if isinstance(accuracy, list) else [accuracy], problems, **kw)


def test_accuracy_gap_counts_only_gaps_beyond_noise():
    # 0.60 vs 0.50 on 1000 problems each: margin = 1.96 sqrt(.24/1000 + .25/1000) = 1.96 x 0.02214 = 0.0434 < 0.10
    assert accuracy_gap(_o("a", 0.60, 1000), _o("b", 0.50, 1000)) == 1
    assert accuracy_gap(_o("b", 0.50, 1000), _o("a", 0.60, 1000)) == -1
    # 0.52 vs 0.50: margin = 1.96 sqrt(.2496/1000 + .25/1000) = 0.0438 > 0.02, within noise
    assert accuracy_gap(_o("a", 0.52, 1000), _o("b", 0.50, 1000)) == 0
    # three seeds pool to n = 3000: margin = 1.96 sqrt(.2496/3000 + .25/3000) = 0.0253 < 0.03
    assert accuracy_gap(_o("a", [0.53, 0.53, 0.53], 1000), _o("b", [0.5, 0.5, 0.5], 1000)) == 1


def test_rl_beats_sft():
    base, dash = _o("base", 0.35), _o("dash", 0.52)
    f = rl_beats_sft({"base": base, "dash": dash, "sft_h": _o("sft_h", 0.30), "sft_m": _o("sft_m", 0.41)})
    assert f.line() == ("1. On-policy RL beats SFT: reproduced (DASH 52.0% vs SFT-H 30.0%, SFT-M 41.0%, base 35.0% "
                        "greedy pass@1 in distribution)")
    # SFT-M at 51%: 1 point below DASH, within noise (margin ~4.3 points at n = 1024): only SFT-H is beaten
    assert rl_beats_sft({"dash": dash, "sft_h": _o("sft_h", 0.30), "sft_m": _o("sft_m", 0.51)}).verdict == "partly reproduced"
    assert rl_beats_sft({"dash": dash, "sft_h": _o("sft_h", 0.60), "sft_m": _o("sft_m", 0.60)}).verdict == "not reproduced"
    assert rl_beats_sft({"dash": dash}).verdict == "not tested"
    # no DASH: the next RL method in the preference order stands in; OOD numbers are added when all have them
    f = rl_beats_sft({"grpo": _o("grpo", 0.5, ood_accuracy=[0.2]), "sft_h": _o("sft_h", 0.3, ood_accuracy=[0.1])})
    assert f.evidence.startswith("GRPO 50.0% vs SFT-H 30.0%") and f.evidence.endswith("out of distribution GRPO 20.0%, SFT-H 10.0%")


def test_ppo_higher_but_less_stable():
    pg = _o("dash_no_kl", [0.50, 0.51, 0.49])  # mean 50.0, spread 2 points
    multi = _o("ppo_multi", [0.53, 0.45, 0.55])  # mean 51.0, spread 10 points
    mini = _o("ppo_mini", [0.40, 0.41, 0.42])  # mean 41.0, spread 2 points
    f = ppo_faster_but_unstable({"dash_no_kl": pg, "ppo_multi": multi, "ppo_mini": mini})
    # noise of one evaluation at 50% on 1024 problems: 1.96 sqrt(.25 / 1024) = 0.0306; Multi's spread exceeds
    # the PG spread by 10 - 2 = 8 points > 3.1, and its mean is higher (51 > 50)
    assert f.verdict == "reproduced"
    assert f.evidence == ("DASH without KL 50.0% (mean of 3 seeds), PPO Multi 51.0% (mean of 3 seeds), PPO Mini 41.0% "
                          "(mean of 3 seeds); spread across seeds DASH without KL 2.0, PPO Multi 10.0, PPO Mini 2.0 "
                          "points (noise of one evaluation: 3.1)")
    # PPO lower and as stable: neither part holds
    assert ppo_faster_but_unstable({"dash_no_kl": pg, "ppo_mini": mini}).verdict == "not reproduced"
    # Multi's spread 4 points: 4 - 2 = 2 < 3.1 is within noise, so not less stable; only "higher" holds
    steady = _o("ppo_multi", [0.53, 0.49, 0.51])
    assert ppo_faster_but_unstable({"dash_no_kl": pg, "ppo_multi": steady}).verdict == "partly reproduced"
    # one seed and no base model: stability cannot be measured, the accuracy part alone holds
    one = ppo_faster_but_unstable({"dash_no_kl": _o("dash_no_kl", 0.5), "ppo_multi": _o("ppo_multi", 0.52)})
    assert one.verdict == "partly reproduced"
    assert one.evidence.endswith("stability not measured: it needs 2+ seeds or the base model")


def test_ppo_collapse_counts_as_less_stable():
    base = _o("base", 0.30)
    pg = _o("dash_no_kl", [0.36, 0.35, 0.355])
    mini = _o("ppo_mini", [0.013, 0.010, 0.016])
    # 1.3% vs the base's 30%: noise 1.96 sqrt(.013 x .987 / 1024 + .3 x .7 / 1024) = 0.029 << 0.287, a collapse
    assert mini.collapsed(base) == 3 and pg.collapsed(base) == 0
    f = ppo_faster_but_unstable({"base": base, "dash_no_kl": pg, "ppo_mini": mini})
    assert f.verdict == "partly reproduced"  # less stable (it collapsed), not higher
    assert "; PPO Mini fell below the base model (30.0%) on 3 of 3 seeds; spread" in f.evidence
    # a collapse says nothing when plain policy gradient collapsed too
    assert ppo_faster_but_unstable({"base": base, "dash_no_kl": _o("dash_no_kl", [0.1, 0.1]),
                                    "ppo_mini": _o("ppo_mini", [0.01, 0.01])}).verdict == "not reproduced"


def test_no_kl_shorter_higher_faster():
    kl = _o("dash", 0.50, mean_length=[30.0], train_seconds=[100.0])
    # 56% vs 50% on 1024: margin = 1.96 sqrt(.2464/1024 + .25/1024) = 0.0432 < 0.06
    no_kl = _o("dash_no_kl", 0.56, mean_length=[28.0], train_seconds=[90.0])
    f = no_kl_is_better({"dash": kl, "dash_no_kl": no_kl})
    assert f.line() == ("3. Removing the KL penalty gives shorter outputs, higher accuracy and less time: reproduced "
                        "(length 28.0 vs 30.0 tokens, accuracy 56.0% vs 50.0%, time 90 s vs 100 s (fastest seed), "
                        "without vs with KL)")
    # tied accuracy (52 vs 50 is within 4.3 points); times by the fastest seed: 95 < 100 despite a slow 300 s seed
    tied = _o("dash_no_kl", [0.52, 0.52], mean_length=[28.0, 28.0], train_seconds=[300.0, 95.0])
    assert no_kl_is_better({"dash": kl, "dash_no_kl": tied}).verdict == "partly reproduced"
    # 29.8 is less than 1% shorter than 30 (limit 29.7), and slower, and lower
    worse = _o("dash_no_kl", 0.40, mean_length=[29.8], train_seconds=[120.0])
    assert no_kl_is_better({"dash": kl, "dash_no_kl": worse}).verdict == "not reproduced"
    assert no_kl_is_better({"dash": kl}).verdict == "not tested"


def test_sampling_bottleneck():
    grpo = _o("grpo", 0.5, train_seconds=[200.0], sampling_seconds=[130.0])
    dash = _o("dash", 0.5, train_seconds=[110.0], sampling_seconds=[50.0])
    f = sampling_is_bottleneck({"grpo": grpo, "dash": dash})
    # 130 / 200 = 65% sampling; 110 / 200 = 55% of GRPO's time
    assert f.line() == ("4. Sampling is the bottleneck of standard GRPO: reproduced (GRPO spends 65% of its training "
                        "time sampling (130 s of 200 s); DASH takes 55% of GRPO's time (the paper: 17%))")
    light = _o("grpo", 0.5, train_seconds=[200.0], sampling_seconds=[80.0])  # 40% sampling
    assert sampling_is_bottleneck({"grpo": light, "dash": dash}).verdict == "partly reproduced"
    slow_dash = _o("dash", 0.5, train_seconds=[210.0])
    assert sampling_is_bottleneck({"grpo": light, "dash": slow_dash}).verdict == "not reproduced"
    assert [f.number for f in findings({})] == [1, 2, 3, 4] and {f.verdict for f in findings({})} == {"not tested"}


def _step(seconds_generation, seconds_fb, seconds_reference=0.0):
    row = {"time/generation": seconds_generation, "time/reward": 1.0, "time/forward_backward": seconds_fb,
           "time/optimizer": 0.5, "time/evaluation": 7.0}
    if seconds_reference:
        row["time/reference"] = seconds_reference
    row["time/step"] = sum(row.values())
    return row


def test_outcome_is_read_from_run_summaries_and_metrics():
    # two steps: sampling = (3 + 1) + (5 + 1) = 10 s; updates = (2 + 1 + 0.5) + (4 + 0.5) = 8 s
    rows = [{"step": 0, "eval/greedy/pass@1": 0.3}, _step(3.0, 2.0, seconds_reference=1.0), _step(5.0, 4.0)]
    summary = {"train_seconds": 18.0, "after": {"greedy/pass@1": 0.55, "greedy/mean_length": 27.5}, "steps": 2}
    study_eval = {"out_of_distribution": {"metrics": {"greedy/pass@1": 0.2}}}
    run = Run("dash", 0, Path("runs/dash/seed0"), summary, study_eval, rows)
    o = outcome("dash", [run], problems=512)
    assert (o.accuracy, o.ood_accuracy, o.train_seconds, o.mean_length) == ([0.55], [0.2], [18.0], [27.5])
    assert (o.sampling_seconds, o.update_seconds, o.problems) == ([pytest.approx(10.0)], [pytest.approx(8.0)], 512)
    base = Run("base", None, Path("runs/base"), None,
               {"in_distribution": {"metrics": {"greedy/pass@1": 0.3, "greedy/mean_length": 29.0}}}, [])
    assert outcome("base", [base], 512).accuracy == [0.3] and outcome("base", [base], 512).train_seconds == []
