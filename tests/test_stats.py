"""Paired statistics on synthetic data with known answers: interval coverage, verdicts, pairing."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.stats

from adaptertune.reports.stats import (
    MIN_BOOTSTRAP_N,
    bootstrap_interval,
    paired_comparison,
    t_interval,
    verdict,
)


def test_t_interval_by_hand():
    lo, hi = t_interval([11.0, 13.0, 15.0])  # mean 13, sd 2, t_{0.975,2} = 4.302653
    assert (lo + hi) / 2 == pytest.approx(13.0)
    assert hi - 13.0 == pytest.approx(4.302653 * 2 / math.sqrt(3), rel=1e-6)
    assert t_interval([2.0, 2.0, 2.0]) == (2.0, 2.0)  # no spread, no width
    assert t_interval([1.0]) == (-math.inf, math.inf) and t_interval([]) == (-math.inf, math.inf)


def test_t_interval_matches_scipy_ttest_rel():
    rng = np.random.default_rng(1)
    a, b = rng.normal(70, 1, 6), rng.normal(69, 1, 6)
    ci = scipy.stats.ttest_rel(a, b).confidence_interval(0.95)
    assert t_interval(a - b) == pytest.approx((ci.low, ci.high), rel=1e-10)


@pytest.mark.parametrize("n", [3, 5, 10])
def test_t_interval_covers_the_true_mean_95_percent_of_the_time(n):
    """2000 simulated paired experiments: seed noise shared by both methods (paired) plus own noise."""
    rng = np.random.default_rng(n)
    true_gain, covered = 0.7, 0
    for _ in range(2000):
        seed_effect = rng.normal(0, 2.0, n)  # the same split / order helps or hurts both methods
        ref = 75 + seed_effect + rng.normal(0, 0.5, n)
        var = 75 + true_gain + seed_effect + rng.normal(0, 0.5, n)
        lo, hi = t_interval(var - ref)
        covered += lo <= true_gain <= hi
    assert 0.93 <= covered / 2000 <= 0.97


def test_no_real_difference_is_called_a_win_about_2_5_percent_of_the_time():
    rng = np.random.default_rng(7)
    verdicts = [verdict(*t_interval(rng.normal(0, 1, 3))) for _ in range(2000)]
    assert 0.01 <= verdicts.count("win") / 2000 <= 0.04 and 0.01 <= verdicts.count("loss") / 2000 <= 0.04


def test_verdict_rule():
    assert verdict(0.1, 2.0) == "win" and verdict(-2.0, -0.1) == "loss"
    assert verdict(-0.1, 2.0) == "tie" and verdict(0.0, 1.0) == "tie"  # touching 0 is not above it
    assert verdict(-math.inf, math.inf) == "tie"


def test_a_hundredth_of_a_point_over_three_seeds_is_a_tie():
    ref = {0: 70.0, 1: 71.0, 2: 69.0}
    var = {0: 70.51, 1: 70.52, 2: 69.0}  # mean +0.01, per seed +0.51, -0.48, 0.00
    c = paired_comparison(var, ref)
    assert c.mean_diff == pytest.approx(0.01) and c.n == 3 and c.verdict == "tie" and c.seeds_won == 1
    assert c.ci_low < 0 < c.ci_high and math.isnan(c.boot_low)  # n = 3 < 5: no bootstrap


def test_clear_gain_and_clear_loss():
    ref = {s: 60.0 + s % 2 for s in range(3)}
    assert paired_comparison({s: a + 13 + (s - 1) for s, a in ref.items()}, ref).verdict == "win"
    assert paired_comparison({s: a - 2 for s, a in ref.items()}, ref).verdict == "loss"


def test_unpaired_seeds_are_left_out_and_counted():
    ref = {0: 70.0, 1: 71.0, 2: 69.0, 3: 10.0}  # seed 3: reference only (would drag the reference down)
    var = {0: 72.0, 1: 73.0, 2: 71.5, 5: 99.0}  # seed 5: variant only
    c = paired_comparison(var, ref)
    assert (c.n, c.n_unpaired) == (3, 2)
    assert c.mean_diff == pytest.approx((2.0 + 2.0 + 2.5) / 3)
    one = paired_comparison({0: 80.0, 9: 1.0}, {0: 70.0})
    assert (one.n, one.n_unpaired, one.verdict) == (1, 1, "tie") and one.mean_diff == 10.0
    none = paired_comparison({1: 80.0}, {0: 70.0})
    assert none.n == 0 and math.isnan(none.mean_diff) and none.verdict == "tie"


def test_bootstrap_is_seeded_and_reported_from_five_seeds():
    rng = np.random.default_rng(3)
    ref = {s: float(v) for s, v in enumerate(rng.normal(70, 1, MIN_BOOTSTRAP_N))}
    var = {s: a + 1.0 + float(rng.normal(0, 0.3)) for s, a in ref.items()}
    a, b = paired_comparison(var, ref), paired_comparison(var, ref)
    assert (a.boot_low, a.boot_high) == (b.boot_low, b.boot_high) and a.boot_low < a.mean_diff < a.boot_high
    assert a.ci_low <= a.boot_low and a.boot_high <= a.ci_high  # percentile bootstrap: narrower at small n
    assert bootstrap_interval([1.5] * 6) == (1.5, 1.5)
    d = np.random.default_rng(0).normal(1.0, 1.0, 400)  # large n: both intervals agree
    assert bootstrap_interval(d) == pytest.approx(t_interval(d), abs=0.02)
