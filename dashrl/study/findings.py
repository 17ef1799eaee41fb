"""Did the paper's four findings reproduce? Verdicts computed from the study's own numbers.

Each variant is condensed into an ``Outcome`` (one entry per seed, read from
its runs' logs). Each finding is split into the parts the paper claims, each
part is checked, and the verdict is "reproduced" (every part holds), "partly
reproduced" (some do), "not reproduced" (none does) or "not tested" (a
variant it needs was not run).

Accuracy comparisons allow for evaluation noise: accuracy a is higher than b
only if the gap exceeds 1.96 standard errors of the difference of two
proportions, sqrt(a(1-a)/n_a + b(1-b)/n_b), with n the evaluated problems
times seeds (``accuracy_gap``). A completion length counts as shorter only if
it is at least 1% shorter (``SHORTER``). Times are compared by each variant's
fastest seed: load on a shared machine only ever slows a run down.

Stability (finding 2): PPO counts as less stable than plain policy gradient if
some PPO seed collapsed (ended below the base model beyond noise) while no
policy-gradient seed did, or if its spread across seeds (max - min final
accuracy) exceeds the policy-gradient spread by more than the noise of one
evaluation, 1.96 sqrt(p(1-p)/n).

Simplifications: pass@1 per problem is treated as an independent Bernoulli
(the same problems are used for every variant, which makes the test
conservative); seeds are pooled into the mean and n.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from statistics import mean

RL_PREFERENCE = ("dash", "dash_no_kl", "preemptive", "grpo")  # the RL method finding 1 compares with SFT
PG_PREFERENCE = ("dash_no_kl", "dash")  # the plain policy-gradient method finding 2 compares with PPO
PPO_VARIANTS = ("ppo_multi", "ppo_mini")
SHORTER = 0.01  # a length must be this much shorter (relative) to count as shorter
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
        """1.96 standard errors of one run's accuracy, at this variant's mean accuracy."""
        p = self.mean_accuracy
        return 1.96 * math.sqrt(p * (1 - p) / self.problems)

    @property
    def fastest(self) -> float:
        """Training seconds of the fastest seed."""
        return min(self.train_seconds)

    def collapsed(self, base: "Outcome") -> int:
        """Seeds that ended below the base model's accuracy by more than the noise of the difference."""
        q = base.mean_accuracy
        return sum(base.mean_accuracy - a > 1.96 * math.sqrt(a * (1 - a) / self.problems + q * (1 - q) / base.problems)
                   for a in self.accuracy)


@dataclass(frozen=True)
class Finding:
    number: int
    claim: str
    verdict: str  # reproduced | partly reproduced | not reproduced | not tested
    evidence: str

    def line(self) -> str:
        return f"{self.number}. {self.claim}: {self.verdict} ({self.evidence})"


def accuracy_gap(a: Outcome, b: Outcome) -> int:
    """+1 if a's mean accuracy is higher than b's beyond noise, -1 if lower, 0 if within noise."""
    pa, pb = a.mean_accuracy, b.mean_accuracy
    na, nb = a.problems * len(a.accuracy), b.problems * len(b.accuracy)
    margin = 1.96 * math.sqrt(pa * (1 - pa) / na + pb * (1 - pb) / nb)
    if pa - pb > margin:
        return 1
    if pb - pa > margin:
        return -1
    return 0


def _verdict(parts: list[bool]) -> str:
    if all(parts):
        return "reproduced"
    return "partly reproduced" if any(parts) else "not reproduced"


def _pct(x: float) -> str:
    return f"{x * 100:.1f}%"


def _acc(o: Outcome) -> str:
    """'52.1%' or, with several seeds, '52.1% (mean of 3 seeds)'."""
    n = len(o.accuracy)
    return _pct(o.mean_accuracy) + (f" (mean of {n} seeds)" if n > 1 else "")


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
    evidence = f"{rl.label} {_acc(rl)} vs " + ", ".join(f"{s.label} {_acc(s)}" for s in sfts)
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
    higher = best.mean_accuracy > pg.mean_accuracy  # "slightly higher": any gap counts
    evidence = f"{pg.label} {_acc(pg)}, " + ", ".join(f"{o.label} {_acc(o)}" for o in ppos)
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
            f" points (noise of one evaluation: {pg.noise * 100:.1f})"
    elif not collapses:
        evidence += "; stability not measured: it needs 2+ seeds or the base model"
    return Finding(2, claim, _verdict([higher, bool(collapses) or wider]), evidence)


def no_kl_is_better(outcomes: dict[str, Outcome]) -> Finding:
    """Finding 3: without KL, completions are shorter, accuracy higher and training faster."""
    claim = "Removing the KL penalty gives shorter outputs, higher accuracy and less time"
    kl, no_kl = outcomes.get("dash"), outcomes.get("dash_no_kl")
    if kl is None or no_kl is None or not (kl.mean_length and no_kl.mean_length and kl.train_seconds and no_kl.train_seconds):
        return Finding(3, claim, "not tested", "needs dash and dash_no_kl")
    shorter = mean(no_kl.mean_length) < (1 - SHORTER) * mean(kl.mean_length)
    higher = accuracy_gap(no_kl, kl) > 0
    faster = no_kl.fastest < kl.fastest
    evidence = (f"length {mean(no_kl.mean_length):.1f} vs {mean(kl.mean_length):.1f} tokens, "
                f"accuracy {_acc(no_kl)} vs {_acc(kl)}, "
                f"time {no_kl.fastest:.0f} s vs {kl.fastest:.0f} s (fastest seed), without vs with KL")
    return Finding(3, claim, _verdict([shorter, higher, faster]), evidence)


def sampling_is_bottleneck(outcomes: dict[str, Outcome]) -> Finding:
    """Finding 4: standard GRPO spends most of its time sampling, and sampling the whole step (DASH) cuts it."""
    claim = "Sampling is the bottleneck of standard GRPO"
    grpo = outcomes.get("grpo")
    fast = _first(outcomes, ("dash", "preemptive"))
    if grpo is None or fast is None or not (grpo.train_seconds and grpo.sampling_seconds and fast.train_seconds):
        return Finding(4, claim, "not tested", "needs grpo and dash (or preemptive)")
    share = mean(grpo.sampling_seconds) / mean(grpo.train_seconds)
    ratio = fast.fastest / grpo.fastest
    evidence = (f"GRPO spends {share * 100:.0f}% of its training time sampling "
                f"({mean(grpo.sampling_seconds):.0f} s of {mean(grpo.train_seconds):.0f} s); "
                f"{fast.label} takes {ratio * 100:.0f}% of GRPO's time (the paper: 17%)")
    return Finding(4, claim, _verdict([share > 0.5, ratio < 1.0]), evidence)


def findings(outcomes: dict[str, Outcome]) -> list[Finding]:
    """The paper's four findings, in its order."""
    return [rl_beats_sft(outcomes), ppo_faster_but_unstable(outcomes), no_kl_is_better(outcomes),
            sampling_is_bottleneck(outcomes)]
