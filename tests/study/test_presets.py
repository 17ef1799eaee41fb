"""Study presets: each variant changes only what defines it, budgets are equal, bad studies fail early."""

import re
from pathlib import Path

import pytest
import yaml

from dashrl.config import load_config, to_yaml
from dashrl.errors import UserError
from dashrl.study.presets import EQUAL_TIME_CAP, plan

STUDY_YAML = Path(__file__).parents[2] / "configs" / "study.yaml"


def _jobs(*overrides, path=STUDY_YAML):
    return plan(load_config(path, list(overrides)))


def test_default_study_resolves_to_the_paper_variants():
    jobs = _jobs("study.out_dir=/tmp/s")
    by = {(j.variant, j.seed): j for j in jobs}
    assert sorted({j.variant for j in jobs}) == sorted(["sft_h", "sft_m", "grpo", "preemptive", "dash", "dash_no_kl",
                                                        "ppo_multi", "ppo_mini"])
    # three seeds for every variant: 8 x 3 runs
    assert len(jobs) == 24 and all({s for (v, s) in by if v == name} == {0, 1, 2} for name in {j.variant for j in jobs})
    grpo, pre, dash, no_kl = (by[(v, 0)].config for v in ("grpo", "preemptive", "dash", "dash_no_kl"))
    # standard GRPO: one engine call per micro-batch, no filter, KL 0.04
    assert (grpo.train.generation_batch_size, grpo.train.micro_batch_size, grpo.algo.filter_tau, grpo.algo.beta) == (64, 64, None, 0.04)
    # preemptive: the whole step (32 x 8 = 256) in one call, no filter; DASH adds the filter
    assert (pre.train.generation_batch_size, pre.algo.filter_tau, pre.algo.beta) == (256, None, 0.04)
    assert (dash.train.generation_batch_size, dash.algo.filter_tau, dash.algo.beta) == (256, 0.0, 0.04)
    assert (no_kl.algo.beta, no_kl.algo.filter_tau) == (0.0, 0.0)
    # equal optimizer steps for everything but the equal-time PPO variants
    assert {by[(v, 0)].config.train.steps for v in ("sft_h", "sft_m", "grpo", "preemptive", "dash", "dash_no_kl")} == {100}
    assert (by[("sft_h", 0)].kind, by[("sft_m", 0)].config.sft.source, by[("sft_h", 0)].config.sft.source) == ("sft", "teacher", "reference")
    multi, mini = by[("ppo_multi", 1)].config, by[("ppo_mini", 2)].config
    assert (multi.algo.prompts_per_step, multi.algo.updates_per_batch, multi.algo.clip_eps_low, multi.algo.beta) == (32, 3, 0.2, 0.0)
    assert (mini.algo.prompts_per_step, mini.algo.updates_per_batch, mini.train.micro_batch_size,
            mini.train.generation_batch_size) == (1, 32, 8, 8)
    assert by[("ppo_mini", 2)].time_from == "dash_no_kl" and mini.train.steps == EQUAL_TIME_CAP * 100
    assert (mini.train.seed, mini.log.run_dir) == (2, "/tmp/s/runs/ppo_mini/seed2")
    # every time reference runs before the runs it times
    order = [j.variant for j in jobs]
    assert max(i for i, v in enumerate(order) if v == "dash_no_kl") < min(i for i, v in enumerate(order) if v.startswith("ppo"))


def test_equal_steps_budget_divides_by_updates_per_batch():
    by = {j.variant: j for j in _jobs("study.equal_time=[]", "study.seeds=[0]", "train.steps=96")}
    # K = 3 updates per sampled batch: 96 optimizer steps = 32 batches; K = 32: 3 batches
    assert (by["ppo_multi"].config.train.steps, by["ppo_mini"].config.train.steps, by["dash"].config.train.steps) == (32, 3, 96)
    assert by["ppo_multi"].time_from is None


def test_run_configs_hold_only_what_the_run_uses():
    jobs = _jobs("study.seeds=[0]", "study.variants=[sft_h,dash]")
    for job in jobs:
        saved = yaml.safe_load(to_yaml(job.config))
        assert saved["study"] == yaml.safe_load(to_yaml(load_config()))["study"]  # defaults, not this study's
    # so changing only how the study evaluates leaves every run's config (and its resume check) unchanged
    other = _jobs("study.seeds=[0]", "study.variants=[sft_h,dash]", "study.passk_samples=8", "study.ood_problems=7")
    assert [to_yaml(j.config) for j in jobs] == [to_yaml(j.config) for j in other]


def test_custom_variant_is_an_override_of_the_base():
    jobs = plan(load_config(overrides=["study.variants=[dash,lr_low]", "study.custom_variants={lr_low: [train.lr=1e-5]}",
                                       "study.equal_time=[]"]))
    assert [(j.variant, j.kind, j.config.train.lr) for j in jobs] == [("dash", "rl", 2e-4), ("lr_low", "rl", 1e-5)]


@pytest.mark.parametrize("overrides, message", [
    (["study.variants=[dash,ppo_mulit]"], "unknown variant 'ppo_mulit' (did you mean 'ppo_multi'?)"),
    (["study.variants=[ppo_mini]"], "need study.time_reference 'dash_no_kl' among study.variants"),
    (["study.variants=[dash,dash]", "study.equal_time=[]"], "listed twice"),
    (["study.custom_variants={dash: [train.lr=1]}"], "'dash' is a preset name"),
    (["train.lr_schedule=cosine"], "study.equal_time needs train.lr_schedule=constant"),
    (["study.seeds=[0,1]", "study.all_seeds_for=[ppo_mini]"], "'ppo_mini' runs seed 1 but its time reference"),
    (["study.equal_time=[sft_h,ppo_mini]"], "SFT variants take equal steps"),
    (["study.variants=[dash,bad]", "study.custom_variants={bad: [algo.group_size=1]}", "study.equal_time=[]"],
     "study variant 'bad': overrides: algo.group_size = 1"),
])
def test_bad_studies_fail_before_anything_runs(overrides, message):
    with pytest.raises(UserError, match=re.escape(message)):
        plan(load_config(overrides=overrides))


def test_built_in_study_is_configs_study_yaml():
    from dashrl.config import Config
    from dashrl.study.presets import TESTBED_STUDY

    built_in, shipped = Config.model_validate(TESTBED_STUDY), load_config(STUDY_YAML)
    built_in.log.run_dir = shipped.log.run_dir  # the default run directory is named after the config file
    assert built_in == shipped
