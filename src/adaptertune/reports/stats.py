"""Paired statistics over seeds: is a method's gain over a reference distinguishable from seed noise?

Seeds are paired: at one seed every method sees the same split, subset, data order and head init, so
the comparison is made on per-seed differences ``d_s = acc_variant(s) - acc_reference(s)`` over the
seeds both methods ran (a seed present for one method only is left out and counted). Under k-fold
cross-validation the pairing unit is ``(seed, fold)``: the same seed on the same test fold (the key is
whatever the maps are keyed by, :attr:`adaptertune.reports.collect.RunRecord.pair`). Then

- the mean difference and its two-sided t-interval ``mean(d) ± t_{1-a/2, n-1} sd(d) / sqrt(n)``
  (Student's paired t-interval; exact coverage when the differences are normal);
- where ``n >= MIN_BOOTSTRAP_N``, a seeded percentile bootstrap of ``mean(d)``, reported beside it (a check
  that does not assume normality; it covers less than nominal at small n, so it does not decide);
- the verdict from the t-interval alone: ``win`` when it lies entirely above 0, ``loss`` when entirely
  below, ``tie`` otherwise (so fewer than 2 paired seeds is always a tie: no interval can be formed).

All functions are pure: numbers in, numbers out.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from ..extras import require

__all__ = [
    "CAP_RULE",
    "MIN_BOOTSTRAP_N",
    "VERDICTS",
    "WIN_RULE",
    "PairedComparison",
    "bootstrap_interval",
    "paired_comparison",
    "t_interval",
    "verdict",
]

VERDICTS = ("win", "tie", "loss")
MIN_BOOTSTRAP_N = 5
WIN_RULE = (
    "Verdicts compare paired seeds (same split, subset and data order at each seed; under k-fold CV, paired "
    "(seed, fold)): win = the 95% "
    "t-interval of the mean per-seed difference lies entirely above 0, loss = entirely below 0, tie = it "
    "contains 0 (always with fewer than 2 paired seeds)."
)
CAP_RULE = (
    "Budget-limited: a run of either method trained to its epoch cap without early stopping ending it, so its "
    "validation accuracy might still have been rising; a longer budget may reverse such a verdict."
)


def t_interval(diffs: Sequence[float], level: float = 0.95) -> tuple[float, float]:
    """Two-sided Student t-interval for the mean of ``diffs``; ``(-inf, inf)`` with fewer than 2 values."""
    d = np.asarray(diffs, dtype=np.float64)
    n = len(d)
    if n < 2:
        return -math.inf, math.inf
    stats = require("scipy.stats", "The paired t-interval")
    mean = float(d.mean())
    half = float(stats.t.ppf(0.5 + level / 2, n - 1)) * float(d.std(ddof=1)) / math.sqrt(n)
    return mean - half, mean + half


def bootstrap_interval(
    diffs: Sequence[float], level: float = 0.95, n_resamples: int = 9999, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``diffs`` (scipy.stats.bootstrap), seeded."""
    d = np.asarray(diffs, dtype=np.float64)
    if len(d) < 2:
        return -math.inf, math.inf
    if np.all(d == d[0]):  # every resample has the same mean
        return float(d[0]), float(d[0])
    res = require("scipy.stats", "The paired bootstrap").bootstrap(
        (d,),
        np.mean,
        n_resamples=n_resamples,
        confidence_level=level,
        method="percentile",
        rng=np.random.default_rng(seed),
    )
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def verdict(low: float, high: float) -> str:
    """``win`` if the interval lies above 0, ``loss`` if below, else ``tie``."""
    if low > 0:
        return "win"
    if high < 0:
        return "loss"
    return "tie"


@dataclass(frozen=True)
class PairedComparison:
    """A variant against a reference over their shared seeds (differences in accuracy points)."""

    n: int  # paired seeds
    n_unpaired: int  # seeds present for only one of the two (left out)
    mean_diff: float  # mean over paired seeds of variant - reference (nan without paired seeds)
    ci_low: float  # t-interval
    ci_high: float
    boot_low: float  # percentile bootstrap (nan when n < MIN_BOOTSTRAP_N)
    boot_high: float
    seeds_won: int  # paired seeds where the variant is strictly better
    verdict: str  # win / tie / loss, from the t-interval


def paired_comparison(
    variant: Mapping[Hashable, float],
    reference: Mapping[Hashable, float],
    level: float = 0.95,
    n_resamples: int = 9999,
    seed: int = 0,
) -> PairedComparison:
    """Compare two ``{seed: accuracy}`` (or ``{(seed, fold): accuracy}``) maps over the keys both have.

    Args:
        variant: accuracy per seed of the method under test.
        reference: accuracy per seed of the baseline.
        level: confidence level of both intervals.
        n_resamples: bootstrap resamples.
        seed: bootstrap seed (the report is reproducible).

    Returns:
        A :class:`PairedComparison`.

    Example:
        >>> c = paired_comparison({0: 80.0, 1: 81.0, 2: 79.5}, {0: 70.0, 1: 70.5, 2: 70.2})
        >>> c.verdict, c.n
        ('win', 3)
    """
    shared = sorted(set(variant) & set(reference), key=repr)
    unpaired = len(set(variant) ^ set(reference))
    d = [float(variant[s]) - float(reference[s]) for s in shared]
    mean = float(np.mean(d)) if d else math.nan
    lo, hi = t_interval(d, level)
    b_lo, b_hi = bootstrap_interval(d, level, n_resamples, seed) if len(d) >= MIN_BOOTSTRAP_N else (math.nan, math.nan)
    won = sum(x > 0 for x in d)
    return PairedComparison(len(d), unpaired, mean, lo, hi, b_lo, b_hi, won, verdict(lo, hi))
