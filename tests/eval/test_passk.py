"""Tests for the unbiased pass@k estimator against hand-computed binomial ratios."""

from __future__ import annotations

import pytest

from dashrl.eval.passk import mean_pass_at_k, pass_at_k


@pytest.mark.parametrize(
    ("n", "c", "k", "expected"),
    [
        (4, 1, 1, 0.25),  # 1 - C(3,1)/C(4,1) = 1 - 3/4
        (4, 1, 2, 0.5),  # 1 - C(3,2)/C(4,2) = 1 - 3/6
        (5, 0, 1, 0.0),  # C(5,k)/C(5,k) = 1
        (5, 0, 5, 0.0),
        (5, 5, 1, 1.0),  # n - c = 0 < k
        (5, 5, 5, 1.0),
        (10, 3, 5, 1 - 21 / 252),  # C(7,5) = 21, C(10,5) = 252
        (10, 3, 1, 0.3),  # 1 - C(7,1)/C(10,1) = 1 - 7/10
        (10, 6, 5, 1.0),  # n - c = 4 < 5: every 5 samples include a correct one
        (3, 1, 3, 1.0),  # n - c = 2 < 3
    ],
)
def test_pass_at_k_hand_values(n: int, c: int, k: int, expected: float) -> None:
    assert pass_at_k(n, c, k) == pytest.approx(expected, abs=1e-12)


def test_pass_at_k_large_n_is_finite() -> None:
    # 1 - C(999,100)/C(1000,100) = 1 - (1000-100)/1000 = 0.1
    assert pass_at_k(1000, 1, 100) == pytest.approx(0.1, abs=1e-12)


@pytest.mark.parametrize(
    ("n", "c", "k"),
    [
        (4, 1, 5),  # k > n
        (4, 5, 1),  # c > n
        (-1, 0, 1),
        (4, -1, 1),
        (4, 1, 0),
        (4, 1, -1),
        (0, 0, 1),  # k > n
    ],
)
def test_pass_at_k_rejects_bad_counts(n: int, c: int, k: int) -> None:
    with pytest.raises(ValueError):
        pass_at_k(n, c, k)


def test_mean_pass_at_k() -> None:
    # k=2: (4,1) -> 0.5, (4,0) -> 0, (4,4) -> 1; mean = 1.5 / 3
    assert mean_pass_at_k([(4, 1), (4, 0), (4, 4)], 2) == pytest.approx(0.5)


def test_mean_pass_at_k_mixed_n() -> None:
    # k=1: (4,1) -> 0.25, (10,3) -> 0.3; mean = 0.55 / 2
    assert mean_pass_at_k([(4, 1), (10, 3)], 1) == pytest.approx(0.275)


def test_mean_pass_at_k_rejects_empty_and_bad_pairs() -> None:
    with pytest.raises(ValueError):
        mean_pass_at_k([], 1)
    with pytest.raises(ValueError):
        mean_pass_at_k([(4, 1), (2, 0)], 3)
