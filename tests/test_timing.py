"""Tests for dashrl.timing: stage accumulation, token throughput, reset, shares.

Wall-clock checks only use safe lower bounds (a sleep of 0.01 s records at least 0.01 s).
"""

from __future__ import annotations

import time

import pytest

from dashrl.timing import StageTimer, summarize_shares


def test_stage_records_at_least_the_sleep() -> None:
    timer = StageTimer()
    with timer.stage("generation"):
        time.sleep(0.01)
    assert timer.seconds()["generation"] >= 0.01


def test_reentering_a_stage_accumulates() -> None:
    timer = StageTimer()
    for _ in range(2):
        with timer.stage("backward"):
            time.sleep(0.01)
    assert timer.seconds()["backward"] >= 0.02


def test_stage_records_time_even_when_body_raises() -> None:
    timer = StageTimer()
    with pytest.raises(RuntimeError), timer.stage("scoring"):
        raise RuntimeError("boom")
    assert "scoring" in timer.seconds()


def test_tokens_per_second_only_for_stages_with_tokens_and_time() -> None:
    timer = StageTimer()
    with timer.stage("generation", tokens=100):
        time.sleep(0.01)
    timer.add_tokens("generation", 50)
    with timer.stage("scoring"):
        pass
    timer.add_tokens("never_timed", 10)
    rates = timer.tokens_per_second()
    assert set(rates) == {"generation"}
    assert rates["generation"] == pytest.approx(150 / timer.seconds()["generation"])


def test_reset_returns_snapshot_and_clears() -> None:
    timer = StageTimer()
    with timer.stage("generation", tokens=10):
        time.sleep(0.01)
    with timer.stage("update"):
        pass
    snapshot = timer.reset()
    assert set(snapshot) == {"time/generation", "time/update", "throughput/generation_tok_s"}
    assert snapshot["time/generation"] >= 0.01
    assert timer.seconds() == {} and timer.tokens_per_second() == {}
    assert timer.reset() == {}


def test_summarize_shares_totals_and_shares() -> None:
    steps = [{"generation": 3.0, "update": 1.0}, {"generation": 5.0, "scoring": 1.0}]
    summary = summarize_shares(steps)
    assert list(summary) == ["generation", "update", "scoring"]
    assert summary["generation"] == {"seconds": 8.0, "share": pytest.approx(0.8)}
    assert summary["update"]["share"] == pytest.approx(0.1)
    assert sum(s["share"] for s in summary.values()) == pytest.approx(1.0)


def test_summarize_shares_without_time() -> None:
    assert summarize_shares([]) == {}
    assert summarize_shares([{"generation": 0.0}]) == {"generation": {"seconds": 0.0, "share": 0.0}}
