"""The effect-size elbow rule on sweeps with a known answer: every truth type, the failure cases, its bounds,
its error rate and its bad input."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy import stats

from adaptertune.analysis.elbow import fit_elbow
from adaptertune.analysis.elbow_effect import (
    DEFAULT_DELTA,
    INCONCLUSIVE,
    NOT_REACHED,
    effect_index,
    fit_effect_elbow,
    pair_lower_bounds,
)
from adaptertune.analysis.synthetic import TRUTHS, simulate, true_answer, truth_curve
from adaptertune.errors import ConfigError, DataError

GRID = (1, 2, 4, 8, 16, 32, 64)
WIDE = (0, 1, 2, 4, 8, 16, 32, 64, 128, 256)


def _points(y: np.ndarray, ranks) -> list[tuple[int, int, float]]:
    return [(int(r), s, float(y[s, i])) for i, r in enumerate(ranks) for s in range(y.shape[0])]


def _label(idx: int, ranks) -> int | str:
    return NOT_REACHED if idx == len(ranks) else ranks[idx]


@pytest.mark.parametrize("ranks", [GRID, WIDE], ids=["1..64", "0,1..256"])
def test_true_answers_are_the_users_question(ranks):
    """Smallest rank within delta of the grid's best; not reached when one more doubling gains > delta."""
    got = {t: _label(true_answer(t, ranks, 1.0), ranks) for t in TRUTHS}
    assert got == {
        "rising": NOT_REACHED,
        "saturating": 16,
        "knee8": 8,
        "knee32": 32,
        "knee_top": ranks[-1],
        "flat": ranks[0],
    }
    # on the grid, a knee at the top is the same curve as one still rising: no rule can tell them apart
    assert np.allclose(truth_curve("knee_top", ranks), truth_curve("rising", ranks))


@pytest.mark.parametrize("truth", ["saturating", "knee8", "knee32", "flat"])
@pytest.mark.parametrize("ranks", [GRID, WIDE], ids=["1..64", "0,1..256"])
def test_recovers_each_truth_with_enough_seeds(truth, ranks):
    """Low noise (run sd 0.1) and 10 seeds: the rule's answer is the truth's answer."""
    mu = truth_curve(truth, ranks, gain=2.0)
    y = simulate(np.random.default_rng(0), mu, 10, 1, run_sd=0.1)[0]
    res = fit_effect_elbow(_points(y, ranks))
    assert res.label == _label(true_answer(truth, ranks, 1.0, gain=2.0), ranks), res.lower
    assert res.verdict == "elbow" and res.shown[ranks.index(res.elbow)]


def test_rising_curve_is_not_reached():
    """A sweep still rising 2 points per doubling at its top: the top beats every smaller rank by > delta."""
    ranks = WIDE
    y = simulate(np.random.default_rng(1), truth_curve("rising", ranks, gain=2.0), 5, 1, run_sd=0.2)[0]
    res = fit_effect_elbow(_points(y, ranks))
    assert res.verdict == NOT_REACHED and res.elbow is None and res.label == NOT_REACHED
    assert res.top_gain > DEFAULT_DELTA and "acc(256) - best smaller >=" in res.interval_label
    # a rise of 1.3 per doubling with 3 noisy seeds cannot be shown to exceed delta = 1: the answer is the
    # largest rank (the rank to use), not "not reached" -- the study's false elbow at the top
    y = simulate(np.random.default_rng(2), truth_curve("rising", ranks), 3, 1)[0]
    assert fit_effect_elbow(_points(y, ranks)).label in (256, NOT_REACHED)


def test_knee_at_the_top_recommends_the_top():
    """The knee at the largest rank looks exactly like a rising curve. At the measured gain and noise with 3
    seeds the rule answers the top or "not reached" (both say: use the largest rank) or "inconclusive", and
    a smaller rank rarely; the paired rule answers a smaller rank in most sweeps."""
    ys = simulate(np.random.default_rng(10), truth_curve("knee_top", GRID), 3, 200)
    idx = effect_index(ys)
    assert np.mean((idx >= 0) & (idx < len(GRID) - 1)) <= 0.07
    assert np.mean(idx == len(GRID) - 1) >= 0.6 and np.mean(idx < 0) <= 0.2
    paired = [fit_elbow(_points(y, GRID), n_boot=0, families=()).elbow for y in ys[:50]]
    assert np.mean([e is not None and e < 64 for e in paired]) > 0.5


def test_flat_curve_with_rank_zero_is_head_only():
    """Flat everywhere, head only included: 20 seeds show rank 0 within delta."""
    y = simulate(np.random.default_rng(3), truth_curve("flat", WIDE), 20, 1, run_sd=0.3)[0]
    res = fit_effect_elbow(_points(y, WIDE))
    assert res.elbow == 0 and res.ranks[0] == 0 and all(res.shown)


def test_too_few_seeds_is_inconclusive_not_a_small_rank():
    """Three seeds with run noise 3 points cannot show anything within 1 point: inconclusive."""
    y = simulate(np.random.default_rng(4), truth_curve("flat", GRID), 3, 1, run_sd=3.0)[0]
    res = fit_effect_elbow(_points(y, GRID))
    assert res.verdict == INCONCLUSIVE and res.label == INCONCLUSIVE and not any(res.shown)
    assert "acc(64) - best >=" in res.interval_label
    # a larger delta makes the same data conclusive
    assert fit_effect_elbow(_points(y, GRID), delta=20.0).verdict == "elbow"


def test_bounds_are_paired_t_bounds():
    """Per-step noise: each bound is the paired t lower bound; pooled: the block-model residual sd."""
    rng = np.random.default_rng(5)
    y = rng.normal(size=(4, 5)) + np.arange(5) + rng.normal(size=(4, 1)) * 5
    lower, mean, sigma = pair_lower_bounds(y, 0.05, "per-step")
    for i in range(5):
        for j in range(5):
            if i != j:
                d = y[:, i] - y[:, j]
                ref = d.mean() - stats.t.isf(0.05, 3) * d.std(ddof=1) / 2
                assert lower[i, j] == pytest.approx(ref) and mean[i, j] == pytest.approx(d.mean())
    low_p, _, sig_p = pair_lower_bounds(y, 0.05, "pooled")
    centred = y - y.mean(1, keepdims=True)
    assert sig_p == pytest.approx(math.sqrt(((centred - centred.mean(0)) ** 2).sum() / 12))
    assert low_p[4, 0] == pytest.approx(mean[4, 0] - stats.t.isf(0.05, 12) * sig_p * math.sqrt(2 / 4))
    res = fit_effect_elbow(_points(y, GRID[:5]), noise="per-step")
    # each rank's bound against "the best" is its worst bound against any other rank
    assert res.lower == pytest.approx([min(lower[i, j] for j in range(5) if j != i) for i in range(5)])


def test_batched_index_matches_the_single_fit():
    mu = truth_curve("saturating", WIDE)
    ys = simulate(np.random.default_rng(6), mu, 5, 40)
    idx = effect_index(ys)
    for b in range(40):
        res = fit_effect_elbow(_points(ys[b], WIDE))
        want = {NOT_REACHED: len(WIDE), INCONCLUSIVE: -1}.get(res.verdict, WIDE.index(res.elbow or 0))
        assert idx[b] == want


@pytest.mark.parametrize("truth", ["saturating", "knee32", "rising"])
def test_a_claimed_elbow_is_rarely_more_than_delta_below_the_best(truth):
    """The rule's error: a recommended rank delta or more below the grid's best, at most ~alpha (measured
    noise, 5 seeds, 400 sweeps). The paired rule makes this error in most sweeps of the same data."""
    mu = truth_curve(truth, GRID)
    ys = simulate(np.random.default_rng(7), mu, 5, 400)
    idx = effect_index(ys)
    rec = np.clip(np.where(idx == len(GRID), len(GRID) - 1, idx), 0, None)
    too_small = np.mean((idx >= 0) & (mu[rec] <= mu.max() - 1.0))
    assert too_small <= 0.07
    paired = [fit_elbow(_points(y, GRID), n_boot=0, families=()).elbow or 64 for y in ys[:100]]
    assert np.mean([mu[GRID.index(e)] <= mu.max() - 1.0 for e in paired]) > 0.3


def test_to_dict_is_json_with_rule_delta_bound_and_verdict():
    y = simulate(np.random.default_rng(8), truth_curve("knee8", GRID, gain=2.0, after=0.0), 6, 1, run_sd=0.2)[0]
    d = json.loads(json.dumps(fit_effect_elbow(_points(y, GRID), delta=0.5).to_dict()))
    assert d["elbow"] == 8 and d["verdict"] == "elbow" and d["delta"] == 0.5 and d["rule_name"] == "effect"
    assert "delta = 0.5 points" in d["rule"] and d["interval"].startswith("acc(8) - best >=")
    assert len(d["lower"]) == len(GRID) and len(d["points"]) == 6 * len(GRID)


def test_bad_input_is_a_clear_error():
    y = simulate(np.random.default_rng(9), truth_curve("knee8", GRID), 3, 1)[0]
    pts = _points(y, GRID)
    with pytest.raises(ConfigError, match="delta .* must be a finite number > 0, got 0"):
        fit_effect_elbow(pts, delta=0.0)
    with pytest.raises(ConfigError, match="alpha must be in"):
        fit_effect_elbow(pts, alpha=1.5)
    with pytest.raises(ConfigError, match="accepted: pooled, per-step"):
        fit_effect_elbow(pts, noise="x")
    with pytest.raises(DataError, match="ranks >= 0"):
        fit_effect_elbow([(-1, 0, 50.0), (1, 0, 51.0)])
    with pytest.raises(DataError, match=">= 2 seeds run at every rank"):
        fit_effect_elbow([(1, 0, 50.0), (2, 0, 60.0)])
    with pytest.raises(DataError, match="do not vary over seeds"):
        fit_effect_elbow([(r, s, 70.0 + r + s) for r in (1, 2, 4) for s in range(3)])
    with pytest.raises(DataError, match="use --noise pooled"):
        fit_effect_elbow(
            [(r, s, 70.0 + r + s + (0.3 if (r, s) == (4, 1) else 0)) for r in (1, 2, 4) for s in range(3)],
            noise="per-step",
        )
