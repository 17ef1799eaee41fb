"""Config loading: defaults <- YAML <- overrides, and one-line errors for bad input."""

from pathlib import Path

import pytest

from dashrl.config import ConfigError, load_config, parse_overrides

CONFIGS = sorted((Path(__file__).parent.parent / "configs").glob("*.yaml"))


def test_overrides_parse_yaml_values():
    assert parse_overrides(["algo.beta=0.04", "eval.ks=[1,2]", "model.path=a/b"]) == {
        "algo": {"beta": 0.04}, "eval": {"ks": [1, 2]}, "model": {"path": "a/b"}}


def test_yaml_then_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  steps: 7\n  lr: 0.01\n")
    cfg = load_config(path, ["train.lr=0.5"])
    assert (cfg.train.steps, cfg.train.lr, cfg.algo.group_size) == (7, 0.5, 8)


@pytest.mark.parametrize("override, message", [
    ("train.lrr=1", "unknown config key 'train.lrr' (did you mean 'train.lr'?)"),
    ("beta=0.1", "unknown config key 'beta' (did you mean 'algo.beta'?)"),
    ("train.steps=abc", "train.steps = 'abc'"),
    ("algo.beta=-1", "algo.beta = -1: Input should be greater than or equal to 0"),
    ("algo.loss_agg=mean", "algo.loss_agg = 'mean'"),
    ("train.micro_batch_size=3", "must divide one another"),
    ("noequals", "is not of the form key=value"),
])
def test_bad_values_give_one_line_errors(override, message):
    with pytest.raises(ConfigError) as info:
        load_config(overrides=[override])
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [1, 2\n")
    with pytest.raises(ConfigError, match="bad.yaml line 2: not valid YAML"):
        load_config(bad)
    listy = tmp_path / "list.yaml"
    listy.write_text("- 1\n")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_config(listy)


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_shipped_configs_load_and_start_with_their_command(path):
    load_config(path)
    first = path.read_text().splitlines()[0]
    command = first.removeprefix("# dashrl ").split(" ")[0]
    assert command in ("train", "study", "bench", "tune")
    assert first.startswith(f"# dashrl {command} {path.relative_to(path.parent.parent)}")
