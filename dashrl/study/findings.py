"""Did the paper's four findings reproduce? Verdicts computed from the study's own numbers.

Each variant is condensed into an ``Outcome`` (one entry per seed, read from
its runs' logs). Each finding is split into the parts the paper claims, each
part is checked, and the verdict is "reproduced" (every part holds), "partly
reproduced" (some do), "not reproduced" (none does) or "not tested" (a
variant it needs was not run).

A difference counts only if it exceeds 2 standard errors (``TWO_SE``). The
standard error of a variant's mean is its sample standard deviation across
seeds over sqrt(seeds); that of a difference of two means is
sqrt(se_a^2 + se_b^2) (``compare``). For accuracies, each variant's standard
error is at least the evaluation's own binomial one, sqrt(p(1-p)/(n seeds)) with
n the evaluated problems: three seeds can agree closely by chance, and one
seed has no spread at all. Times and lengths have no such floor, so their
comparisons need 2+ seeds on each side (with fewer the part does not hold and
the evidence says why). A length must also be at least 1% shorter (``SHORTER``).

Stability (finding 2): PPO counts as less stable than plain policy gradient if
some PPO seed collapsed (ended below the base model by more than 2 standard
errors of the difference of two evaluations) while no policy-gradient seed
did, or if its spread across seeds (max - min final accuracy) exceeds the
policy-gradient spread by more than 2 standard errors of one evaluation,
2 sqrt(p(1-p)/n).

Simplifications: pass@1 per problem is treated as an independent Bernoulli
(the same problems are used for every variant, which makes the floor
conservative); the test is a plain 2-standard-error rule, not a t-test with
few-seed degrees of freedom.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from statistics import mean, stdev

RL_PREFERENCE = ("dash", "dash_no_kl", "preemptive", "grpo")  # the RL method finding 1 compares with SFT
PG_PREFERENCE = ("dash_no_kl", "dash")  # the plain policy-gradient method finding 2 compares with PPO
PPO_VARIANTS = ("ppo_multi", "ppo_mini")
SHORTER = 0.01  # a length must be this much shorter (relative) to count as shorter
TWO_SE = 2.0  # a difference counts only beyond this many standard errors
LABELS = {"sft_h": "SFT-H", "sft_m": "SFT-M", "grpo": "GRPO", "preemptive": "preemptive", "dash": "DASH",
          "dash_no_kl": "DASH without KL", "ppo_multi": "PPO Multi", "ppo_mini": "PPO Mini", "base": "base"}


@dataclass(frozen=True)
class Outcome:
    """One variant's numbers, a list entry per seed.

    accuracy:      in-distribution greedy pass@1 after training, in [0, 1]
    problems:      in-distribution problems each accuracy was measured on
    ood_accuracy:  out-of-distribution greedy pass@1 ([] if not evaluated)
    train_seconds: training time (evaluation and checkpoints excluded)
    sampling_seconds / update_seconds: generation + reward / reference + forward-backward + optimizer
    mean_length:   mean greedy completion length in tokens after training
    """

    name: str
    accuracy: list[float]
    problems: int
    ood_accuracy: list[float] = field(default_factory=list)
    train_seconds: list[float] = field(default_factory=list)
    sampling_seconds: list[float] = field(default_factory=list)
    update_seconds: list[float] = field(default_factory=list)
    mean_length: list[float] = field(default_factory=list)

    @property
    def label(self) -> str:
        return LABELS.get(self.name, self.name)

    @property
    def mean_accuracy(self) -> float:
        return mean(self.accuracy)

    @property
    def spread(self) -> float | None:
        """max - min accuracy across seeds; None with one seed."""
        return max(self.accuracy) - min(self.accuracy) if len(self.accuracy) > 1 else None

    @property
    def noise(self) -> float:
        """2 standard errors of one run's accuracy (one evaluation), at this variant's mean accuracy."""
        p = self.mean_accuracy
        return TWO_SE * math.sqrt(p * (1 - p) / self.problems)

    @property
    def accuracy_se(self) -> float:
        """Standard error of the mean accuracy: across seeds, but at least the evaluation's binomial one."""
        p, n = self.mean_accuracy, len(self.accuracy)
        binomial = math.sqrt(p * (1 - p) / (self.problems * n))
        return max(binomial, standard_error(self.accuracy) or 0.0)

    def collapsed(self, base: "Outcome") -> int:
        """Seeds that ended below the base model's accuracy by more than the noise of the difference."""
        q = base.mean_accuracy
        return sum(base.mean_accuracy - a > TWO_SE * math.sqrt(a * (1 - a) / self.problems + q * (1 - q) / base.problems)
                   for a in self.accuracy)


@dataclass(frozen=True)
class Finding:
    number: int
    claim: str
    verdict: str  # reproduced | partly reproduced | not reproduced | not tested
    evidence: str
    fidelity: str = ""  # where the setting is and is not like the paper's (empty: not known for this model)

    def line(self) -> str:
        return f"{self.number}. {self.claim}: {self.verdict} ({self.evidence})"


# Where the built-in testbed study is and is not like the paper, per finding (shown under each verdict).
TESTBED_FIDELITY = {
    1: "Like the paper: the base model has seen neither SFT-H's problems nor its solution style (it was pretrained "
       "on step-by-step solutions of the other half of the problem space); SFT-H's solutions are concise, skip "
       "steps and vary notation, as MATH solutions are to Qwen2.5-0.5B; SFT-M is rejection-sampled distillation "
       "from a stronger model. Unlike it: a 0.17M-parameter model, not 0.5-3B; the 'human' solutions are written "
       "by a rule, not by people; the teacher is the same pretraining run on to 75%, not a larger model; short "
       "runs (see the budget above).",
    2: "Like the paper: PPO Multi samples as many completions as plain policy gradient and takes K = 3 steps; PPO "
       "Mini samples 8 completions and takes K = 32; clip 0.2; equal training time. Unlike it: a 0.17M model on "
       "64-token arithmetic, lr 2e-4 (the paper: 3e-6), a few minutes of training instead of hours.",
    3: "Like the paper: beta 0.04 with the k3 estimator vs beta 0, the reference-model pass dropped without KL. "
       "Unlike it: completions are at most 64 tokens of arithmetic, so length has little room to change, and a "
       "0.17M reference model costs little time.",
    4: "Like the paper: standard GRPO samples one micro-batch per engine call, DASH the whole step in one call and "
       "filters groups before any forward pass. Unlike it: transformers' generate on 2 CPU cores, not vLLM on "
       "GPUs; GRPO's micro-batch is the 64 `dashrl tune` picks on this CPU, not the paper's 4; how the time ratio "
       "moves with model size: benchmarks/results/scaling_*.",
}


def standard_error(values: list[float]) -> float | None:
    """Sample standard deviation / sqrt(n); None with fewer than 2 values."""
    return stdev(values) / math.sqrt(len(values)) if len(values) > 1 else None


def compare(a: float, se_a: float | None, b: float, se_b: float | None) -> int | None:
    """+1 if a > b by more than 2 standard errors of the difference, -1 if a < b so, 0 if within;
    None if a standard error is unknown (fewer than 2 seeds)."""
    if se_a is None or se_b is None:
        return None
    margin = TWO_SE * math.sqrt(se_a ** 2 + se_b ** 2)
    return 1 if a - b > margin else -1 if b - a > margin else 0


def compare_samples(xs: list[float], ys: list[float]) -> int | None:
    """``compare`` of the means of two samples, with their standard errors."""
    return compare(mean(xs), standard_error(xs), mean(ys), standard_error(ys))


def accuracy_gap(a: Outcome, b: Outcome) -> int:
    """+1 if a's mean accuracy is higher than b's by more than 2 standard errors, -1 if lower, 0 if within."""
    return compare(a.mean_accuracy, a.accuracy_se, b.mean_accuracy, b.accuracy_se)


def _se_margin(a: Outcome, b: Outcome) -> float:
    return TWO_SE * math.sqrt(a.accuracy_se ** 2 + b.accuracy_se ** 2)


def _verdict(parts: list[bool]) -> str:
    if all(parts):
        return "reproduced"
    return "partly reproduced" if any(parts) else "not reproduced"


def _pct(x: float) -> str:
    return f"{x * 100:.1f}%"


def _acc(o: Outcome) -> str:
    """'52.1%' or, with several seeds, '52.1 ± 1.3% (3 seeds)' (mean ± sample standard deviation)."""
    n = len(o.accuracy)
    if n == 1:
        return _pct(o.mean_accuracy)
    return f"{o.mean_accuracy * 100:.1f} ± {stdev(o.accuracy) * 100:.1f}% ({n} seeds)"


def mean_sd(values: list[float], scale: float = 100.0, digits: int = 1) -> str:
    """'52.1' for one value, '52.1 ± 1.3' (mean ± sample standard deviation) for several, '-' for none;
    values are multiplied by ``scale`` (the default shows fractions as percentages)."""
    if not values:
        return "-"
    text = f"{mean(values) * scale:.{digits}f}"
    return text + (f" ± {stdev(values) * scale:.{digits}f}" if len(values) > 1 else "")


def _ms(values: list[float], unit: str, digits: int = 1) -> str:
    """'28.1 ± 0.4 unit' (mean ± sample std), or the single value (values not scaled)."""
    return mean_sd(values, 1.0, digits) + unit


def _first(outcomes: dict[str, Outcome], names: tuple[str, ...]) -> Outcome | None:
    return next((outcomes[n] for n in names if n in outcomes), None)


def rl_beats_sft(outcomes: dict[str, Outcome]) -> Finding:
    """Finding 1: on-policy RL reaches higher in-distribution accuracy than SFT-H and SFT-M."""
    claim = "On-policy RL beats SFT"
    rl = _first(outcomes, RL_PREFERENCE)
    sfts = [outcomes[n] for n in ("sft_h", "sft_m") if n in outcomes]
    if rl is None or not sfts:
        return Finding(1, claim, "not tested", "needs an RL variant and sft_h or sft_m")
    parts = [accuracy_gap(rl, s) > 0 for s in sfts]
    evidence = f"{rl.label} {_acc(rl)} vs " + ", ".join(
        f"{s.label} {_acc(s)} (2 SE of the difference: {_se_margin(rl, s) * 100:.1f} points)" for s in sfts)
    if "base" in outcomes:
        evidence += f", base {_acc(outcomes['base'])}"
    evidence += " greedy pass@1 in distribution"
    if rl.ood_accuracy and all(s.ood_accuracy for s in sfts):
        evidence += "; out of distribution " + ", ".join(
            f"{o.label} {_pct(mean(o.ood_accuracy))}" for o in [rl, *sfts])
    return Finding(1, claim, _verdict(parts), evidence)


def ppo_faster_but_unstable(outcomes: dict[str, Outcome]) -> Finding:
    """Finding 2: PPO (K > 1) gets slightly higher accuracy in the same time, but is less stable (see the module doc)."""
    claim = "PPO-style updates are higher in the same time but less stable than plain policy gradient"
    pg = _first(outcomes, PG_PREFERENCE)
    ppos = [outcomes[n] for n in PPO_VARIANTS if n in outcomes]
    if pg is None or not ppos:
        return Finding(2, claim, "not tested", "needs dash_no_kl (or dash) and ppo_multi or ppo_mini")
    best = max(ppos, key=lambda o: o.mean_accuracy)
    higher = accuracy_gap(best, pg) > 0
    evidence = f"{pg.label} {_acc(pg)}, " + ", ".join(f"{o.label} {_acc(o)}" for o in ppos) + \
        f" (2 SE of {best.label} - {pg.label}: {_se_margin(best, pg) * 100:.1f} points)"
    base = outcomes.get("base")
    collapses = []
    if base is not None and not pg.collapsed(base):
        collapses = [(o, o.collapsed(base)) for o in ppos if o.collapsed(base)]
        evidence += "".join(f"; {o.label} fell below the base model ({_pct(base.mean_accuracy)}) on {k} of "
                            f"{len(o.accuracy)} seeds" for o, k in collapses)
    spread_known = pg.spread is not None and all(o.spread is not None for o in ppos)
    wider = spread_known and any(o.spread - pg.spread > pg.noise for o in ppos)
    if spread_known:
        evidence += "; spread across seeds " + ", ".join(f"{o.label} {o.spread * 100:.1f}" for o in [pg, *ppos]) + \
            f" points (2 SE of one evaluation: {pg.noise * 100:.1f})"
    elif not collapses:
        evidence += "; stability not measured: it needs 2+ seeds or the base model"
    return Finding(2, claim, _verdict([higher, bool(collapses) or wider]), evidence)


def no_kl_is_better(outcomes: dict[str, Outcome]) -> Finding:
    """Finding 3: without KL, completions are shorter, accuracy higher and training faster."""
    claim = "Removing the KL penalty gives shorter outputs, higher accuracy and less time"
    kl, no_kl = outcomes.get("dash"), outcomes.get("dash_no_kl")
    if kl is None or no_kl is None or not (kl.mean_length and no_kl.mean_length and kl.train_seconds and no_kl.train_seconds):
        return Finding(3, claim, "not tested", "needs dash and dash_no_kl")
    length = compare_samples(no_kl.mean_length, kl.mean_length)
    shorter = length == -1 and mean(no_kl.mean_length) < (1 - SHORTER) * mean(kl.mean_length)
    higher = accuracy_gap(no_kl, kl) > 0
    faster = compare_samples(no_kl.train_seconds, kl.train_seconds) == -1
    evidence = (f"length {_ms(no_kl.mean_length, ' tokens')} vs {_ms(kl.mean_length, ' tokens')}, "
                f"accuracy {_acc(no_kl)} vs {_acc(kl)}, "
                f"time {_ms(no_kl.train_seconds, ' s', 0)} vs {_ms(kl.train_seconds, ' s', 0)}, without vs with KL")
    if min(len(kl.train_seconds), len(no_kl.train_seconds)) < 2:
        evidence += "; lengths and times need 2+ seeds each to be compared"
    return Finding(3, claim, _verdict([shorter, higher, faster]), evidence)


def sampling_is_bottleneck(outcomes: dict[str, Outcome]) -> Finding:
    """Finding 4: standard GRPO spends most of its time sampling, and sampling the whole step (DASH) cuts it."""
    claim = "Sampling is the bottleneck of standard GRPO"
    grpo = outcomes.get("grpo")
    fast = _first(outcomes, ("dash", "preemptive"))
    if grpo is None or fast is None or not (grpo.train_seconds and grpo.sampling_seconds and fast.train_seconds):
        return Finding(4, claim, "not tested", "needs grpo and dash (or preemptive)")
    shares = [a / t for a, t in zip(grpo.sampling_seconds, grpo.train_seconds)]
    share = mean(shares)
    mostly = compare(share, standard_error(shares), 0.5, 0.0) == 1
    ratio = mean(fast.train_seconds) / mean(grpo.train_seconds)
    cheaper = compare_samples(fast.train_seconds, grpo.train_seconds) == -1
    evidence = (f"GRPO spends {_ms([x * 100 for x in shares], '%', 0)} of its training time sampling "
                f"({mean(grpo.sampling_seconds):.0f} s of {mean(grpo.train_seconds):.0f} s); "
                f"{fast.label} takes {ratio * 100:.0f}% of GRPO's time "
                f"({_ms(fast.train_seconds, ' s', 0)} vs {_ms(grpo.train_seconds, ' s', 0)}; the paper: 17%)")
    if min(len(grpo.train_seconds), len(fast.train_seconds)) < 2:
        evidence += "; times need 2+ seeds each to be compared"
    return Finding(4, claim, _verdict([mostly, cheaper]), evidence)


def findings(outcomes: dict[str, Outcome], fidelity: dict[int, str] | None = None) -> list[Finding]:
    """The paper's four findings, in its order, each with its ``fidelity`` note (e.g. ``TESTBED_FIDELITY``)."""
    found = [rl_beats_sft(outcomes), ppo_faster_but_unstable(outcomes), no_kl_is_better(outcomes),
             sampling_is_bottleneck(outcomes)]
    fidelity = fidelity or {}
    return [Finding(f.number, f.claim, f.verdict, f.evidence, fidelity.get(f.number, "")) for f in found]
