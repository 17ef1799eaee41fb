"""The study's PNG plots: reward and completion length over training time, time breakdown, pass@k curves.

Each function takes plain numbers already read from the runs' logs and writes
one PNG. The time-breakdown bars and the reward curve are ``dashrl bench``'s
plots; this module adds completion length over training and pass@k curves.
Simplification: with several seeds, the curves show the first seed only (the
tables give every seed).
"""

from __future__ import annotations

from pathlib import Path

from dashrl.bench import plot_breakdown, plot_reward_vs_time


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def moving_average(values: list[float], window: int) -> list[float]:
    """Trailing mean over up to ``window`` values: [1, 3, 5] with window 2 -> [1, 2, 4]."""
    return [sum(values[max(0, i - window + 1) : i + 1]) / len(values[max(0, i - window + 1) : i + 1])
            for i in range(len(values))]


def reward_vs_time(curves: dict[str, list[tuple[float, float]]], path: Path) -> None:
    """Mean training reward against training seconds, one line per variant."""
    plot_reward_vs_time({name: {"reward_vs_seconds": curve} for name, curve in curves.items()}, path)


def length_vs_time(curves: dict[str, list[tuple[float, float]]], path: Path, window: int = 5) -> None:
    """Mean completion length of the training samples against training seconds, one line per variant."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, curve in curves.items():
        ax.plot([x for x, _ in curve], moving_average([y for _, y in curve], window), label=name)
    ax.set_xlabel("training seconds")
    ax.set_ylabel(f"mean completion length, tokens (moving average of {window})")
    ax.set_title("Completion length over training")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def time_breakdown(seconds: dict[str, dict[str, float]], path: Path) -> None:
    """Stacked bars: sampling / gradient updates / other training seconds per variant."""
    plot_breakdown(seconds, path)


def pass_at_k(curves: dict[str, dict[int, float]], path: Path) -> None:
    """pass@k against k (log scale), one line per variant."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, curve in curves.items():
        ks = sorted(curve)
        ax.plot(ks, [curve[k] * 100 for k in ks], marker="o", markersize=3, label=name)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("k (samples per problem)")
    ax.set_ylabel("pass@k %")
    ax.set_title("pass@k in distribution")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
