"""The paired-seed elbow rule: its tests, its multiplicity control, its bootstrap and its recovery of known knees."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy import stats

from adaptertune.analysis.elbow import fit_elbow, holm, pair_tests, paired_table
from adaptertune.analysis.synthetic import knee_sweep, recovery
from adaptertune.errors import ConfigError, DataError

GRID = [1, 2, 4, 8, 16, 32, 64]


def _pattern_sweep(knee: float, gain: float = 2.0, seeds: int = 3, seed_fx: float = 0.5, wiggle: float = 0.3):
    """Deterministic sweep: knee-shaped truth, a seed offset, and a small per-run wiggle that varies with rank."""
    return [
        (r, s, 70 + gain * math.log2(min(r, knee)) + seed_fx * s + wiggle * ((i + s) % 3 - 1))
        for i, r in enumerate(GRID)
        for s in range(seeds)
    ]


def test_holm_adjusts_like_the_textbook():
    # sorted p 0.01, 0.03, 0.04 -> 3 * 0.01, max(0.03, 2 * 0.03), max(0.06, 0.04)
    assert np.allclose(holm(np.array([0.01, 0.04, 0.03])), [0.03, 0.06, 0.06])
    assert np.allclose(holm(np.array([[0.5, 0.9]])), [[1.0, 1.0]])  # capped at 1


def test_per_step_tests_are_scipy_paired_t_tests():
    rng = np.random.default_rng(0)
    y = rng.normal(size=(4, 5)) + np.arange(5)
    tests, _ = pair_tests(GRID[:5], y, noise="per-step", compare="adjacent")
    for k, t in enumerate(tests):
        ref = stats.ttest_rel(y[:, k + 1], y[:, k], alternative="greater")
        assert t.p == pytest.approx(ref.pvalue) and t.df == 3
    assert [t.p_holm for t in tests] == pytest.approx(list(holm(np.array([t.p for t in tests]))))


def test_pooled_noise_is_the_block_model_residual():
    """sigma^2 of y = mu_rank + seed + eps: residual sum of squares over (n - 1)(K - 1)."""
    rng = np.random.default_rng(1)
    y = rng.normal(size=(3, 4)) + np.array([[0.0], [5.0], [-3.0]])  # big seed offsets change nothing
    tests, sigma = pair_tests(GRID[:4], y)
    centred = y - y.mean(1, keepdims=True)
    ss = ((centred - centred.mean(0)) ** 2).sum()
    assert sigma == pytest.approx(math.sqrt(ss / 6))
    assert len(tests) == 6 and all(t.se == pytest.approx(sigma * math.sqrt(2 / 3)) and t.df == 6 for t in tests)
    # lower > 0 exactly when Holm calls the comparison significant
    assert all((t.lower > 0) == t.significant for t in tests)


def test_pairing_removes_large_seed_offsets():
    """Seeds 5 points apart, 0.3-point run noise: paired gains still find the knee at 8."""
    res = fit_elbow(_pattern_sweep(8, seed_fx=5.0), n_boot=200)
    assert res.elbow == 8 and res.interval[0] <= 8 <= res.interval[1]
    assert res.sigma < 0.5 and max(res.std_acc) > 4


def test_docstring_example_and_adjacent_mode():
    res = fit_elbow(_pattern_sweep(16), n_boot=0)
    assert res.label == 16 and res.interval == (16, 16) and res.compare == "later"
    assert len(res.tests) == 21 and len(res.steps) == 6
    adj = fit_elbow(_pattern_sweep(16), compare="adjacent", n_boot=0)
    assert adj.elbow == 16 and len(adj.tests) == 6 and "next swept rank" in adj.rule


def test_log_linear_sweep_is_not_reached_and_flat_sweep_is_the_smallest_rank():
    res = fit_elbow(_pattern_sweep(math.inf), n_boot=100)
    assert res.elbow is None and not res.reached and res.label == "not reached"
    assert res.interval[1] is None and res.steps[-1].significant
    flat = fit_elbow(_pattern_sweep(1), n_boot=100)
    assert flat.elbow == 1 and not any(t.significant for t in flat.tests)


def test_bootstrap_is_seeded_and_brackets_the_elbow():
    pts = knee_sweep(np.random.default_rng(3), 16, GRID, run_sd=1.0)
    a, b = fit_elbow(pts, n_boot=300, seed=7), fit_elbow(pts, n_boot=300, seed=7)
    assert a.interval == b.interval and a.boot_elbows == b.boot_elbows
    assert sum(a.boot_elbows.values()) == 300
    order = [*GRID, math.inf]
    lo, hi, e = (math.inf if v is None else v for v in (*a.interval, a.elbow))
    assert order.index(lo) <= order.index(e) <= order.index(hi)


def test_seeds_missing_a_rank_are_dropped_and_listed():
    pts = _pattern_sweep(8) + [(1, 9, 70.0), (2, 9, 71.0)]
    res = fit_elbow(pts, n_boot=0)
    assert res.dropped_seeds == [9] and res.seeds == [0, 1, 2] and len(res.points) == 21


def test_bad_input_is_a_clear_error():
    with pytest.raises(DataError, match=">= 2 seeds run at every rank"):
        fit_elbow([(1, 0, 50.0), (2, 0, 60.0), (4, 0, 65.0)])
    with pytest.raises(DataError, match="at least 2 swept ranks"):
        fit_elbow([(4, 0, 50.0), (4, 1, 51.0)])
    with pytest.raises(DataError, match="appears twice"):
        paired_table([(1, 0, 50.0), (1, 0, 51.0)])
    with pytest.raises(DataError, match="finite"):
        paired_table([(1, 0, float("nan"))])
    with pytest.raises(DataError, match="do not vary over seeds"):
        fit_elbow([(r, s, 70.0 + r + s) for r in (1, 2, 4) for s in range(3)])
    with pytest.raises(ConfigError, match="accepted: pooled, per-step"):
        fit_elbow(_pattern_sweep(8), noise="x")
    with pytest.raises(ConfigError, match="accepted: later, adjacent"):
        fit_elbow(_pattern_sweep(8), compare="x")
    with pytest.raises(ConfigError, match="Unknown curve family"):
        fit_elbow(_pattern_sweep(8), families=["cubic"])


def test_to_dict_is_json_with_the_rule_and_every_fit():
    d = json.loads(json.dumps(fit_elbow(_pattern_sweep(math.inf), n_boot=50).to_dict()))
    assert d["elbow"] == "not reached" and d["interval"][1] == "not reached"
    assert "Holm" in d["rule"] and {f["family"] for f in d["fits"]} == {
        "power",
        "exponential",
        "hinge",
        "power_linear",
    }
    assert sum(f["weight"] for f in d["fits"]) == pytest.approx(1.0)


# Recovery on synthetic paired-seed sweeps: 3 seeds, a seed effect (sd 0.7) shared by every rank plus per-run
# noise (sd 0.7), +2 points per doubling up to the knee and exactly flat after it (the rule's own null), ranks
# 1..256. The paired rule where it fails (still-rising curves, a knee at the top, the measured noise, the
# real grids) is in tests/test_elbow_effect.py and benchmarks/elbow_coverage.py.


@pytest.mark.parametrize("knee", [4, 32])
def test_recovers_a_known_knee_within_one_doubling(knee):
    s = recovery(knee, 100, seed=knee, n_boot=20)
    assert s.within_one_doubling >= 0.9, s
    assert s.past_knee <= 0.1, s


def test_log_linear_sweeps_are_not_reached():
    s = recovery(math.inf, 100, seed=1, n_boot=20)
    assert s.within_one_doubling >= 0.9, s


def test_flat_sweeps_rarely_get_a_false_elbow():
    """Familywise control: a sweep with no gain at all is called flat (elbow = smallest rank) >= 90% of the time."""
    s = recovery(1, 100, seed=2, n_boot=20)
    assert s.exact >= 0.9, s
