"""Unbiased pass@k from n samples per problem of which c were correct.

pass@k = 1 - C(n-c, k) / C(n, k) (Chen et al. 2021, "Evaluating Large Language
Models Trained on Code"), the probability that at least one of k samples drawn
without replacement from the n is correct.

Simplifications: scores are binary (a sample is correct or not), and the mean
over problems weights every problem equally regardless of its n.
"""

from __future__ import annotations


def _check_counts(n: int, c: int, k: int) -> None:
    if n < 0 or c < 0 or k < 1:
        raise ValueError(f"need n >= 0, c >= 0, k >= 1; got n={n}, c={c}, k={k}")
    if k > n:
        raise ValueError(f"k={k} exceeds the number of samples n={n}")
    if c > n:
        raise ValueError(f"c={c} correct exceeds the number of samples n={n}")


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k for one problem with ``c`` of ``n`` samples correct.

    Computed as 1 - prod_{i=n-c+1}^{n} (1 - k/i), which equals
    1 - C(n-c, k)/C(n, k) without forming large binomials. Returns 1.0 when
    n - c < k (every draw of k contains a correct sample). Raises ValueError
    for negative counts, k < 1, k > n or c > n.
    """
    _check_counts(n, c, k)
    if n - c < k:
        return 1.0
    all_wrong = 1.0
    for i in range(n - c + 1, n + 1):
        all_wrong *= 1.0 - k / i
    return 1.0 - all_wrong


def mean_pass_at_k(counts: list[tuple[int, int]], k: int) -> float:
    """Mean of ``pass_at_k(n, c, k)`` over problems given as ``(n, c)`` pairs.

    Raises ValueError on an empty list, or on any pair ``pass_at_k`` rejects.
    """
    if not counts:
        raise ValueError("mean_pass_at_k needs at least one problem")
    return sum(pass_at_k(n, c, k) for n, c in counts) / len(counts)
