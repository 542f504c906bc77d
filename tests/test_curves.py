"""Curve families beside the elbow rule: recovery of known curves, identification flags, AICc weights."""

from __future__ import annotations

import math

import numpy as np
import pytest

from adaptertune.analysis.curves import FAMILIES, akaike_weights, fit_curve, fit_curves, predicted_elbow

R = np.repeat([1, 2, 4, 8, 16, 32, 64], 3).astype(float)
WIGGLE = 0.05 * np.sin(np.arange(len(R)))


def test_families_compute_their_formulas():
    r = np.array([1.0, 3.0, 10.0])
    a, b, c, e = 90.0, 20.0, 1.5, 0.01
    # the power laws are fitted as y1 + s (1 - r^-c) / c with y1 = a - b, s = b c
    assert np.allclose(FAMILIES["power"].fn(r, a - b, b * c, c), a - b * r**-c)
    assert np.allclose(FAMILIES["power_linear"].fn(r, a - b, b * c, c, e), a - b * r**-c - e * (r - 1))
    assert np.allclose(FAMILIES["power"].fn(r, 70.0, 2.0, 1e-9), 70.0 + 2.0 * np.log(r))  # c -> 0: log-linear
    assert np.allclose(FAMILIES["exponential"].fn(r, a, b, 4.0), a - b * np.exp(-r / 4.0))
    assert np.allclose(FAMILIES["hinge"].fn(r, 70.0, 2.0, 4.0), 70.0 + 2.0 * np.log2(np.minimum(r, 4.0)))


def test_power_law_is_recovered_and_identified():
    fit = fit_curve("power", R, 90.0 - 20.0 * R**-1.5 + WIGGLE)
    p = fit.params
    assert p["c"] == pytest.approx(1.5, abs=0.02) and p["y1"] + p["s"] / p["c"] == pytest.approx(90.0, abs=0.05)
    assert fit.identified and fit.problems == []


def test_log_linear_points_leave_the_bend_unidentified():
    """The issue's finding: on a log-linear sweep c runs to its floor; the hinge puts its knee on the last rank."""
    y = 70.0 + 2.0 * np.log2(R) + WIGGLE
    steps = [(lo, hi, 0.5) for lo, hi in zip([1, 2, 4, 8, 16, 32], [2, 4, 8, 16, 32, 64])]
    fits = {f.family: f for f in fit_curves(R, y, steps)}
    assert "c at its bound 0.001" in fits["power"].problems and not fits["power"].identified
    assert any("r0 at its bound" in p for p in fits["hinge"].problems)
    assert fits["power"].params["s"] == pytest.approx(2.0 / math.log(2), rel=0.02)  # gain per e-fold stays identified
    assert all(f.elbow is None for f in fits.values() if f.family != "exponential")
    assert sum(f.weight for f in fits.values()) == pytest.approx(1.0)


def test_hinge_locates_a_knee_between_swept_ranks():
    fit = fit_curve("hinge", R, 70.0 + 2.0 * np.log2(np.minimum(R, 16.0)) + WIGGLE)
    assert fit.identified and 8 < fit.params["r0"] < 32 and fit.params["g"] == pytest.approx(2.0, abs=0.05)


def test_too_few_ranks_is_flagged_not_fitted():
    fit = fit_curve("power_linear", np.repeat([1, 2, 4], 2), np.array([1.0, 1.1, 2.0, 2.1, 2.5, 2.4]))
    assert not fit.identified and "3 distinct ranks cannot determine 4 parameters" in fit.problems[0]
    assert fit.to_dict()["elbow"] == "no fit"


def test_akaike_weights():
    assert akaike_weights([10.0, 10.0]) == pytest.approx([0.5, 0.5])
    w = akaike_weights([0.0, 2.0, math.inf])
    assert w[2] == 0.0 and w[0] / w[1] == pytest.approx(math.e)
    assert akaike_weights([math.inf]) == [0.0]


def test_predicted_elbow():
    ranks = [1, 2, 4, 8]
    adjacent = [(1, 2, 0.5), (2, 4, 0.5), (4, 8, 0.5)]
    later = [(lo, hi, 0.5) for i, lo in enumerate(ranks) for hi in ranks[i + 1 :]]
    assert predicted_elbow(ranks, [70.0, 72.0, 72.1, 72.2], adjacent) == 2
    assert predicted_elbow(ranks, [70.0, 70.1, 70.2, 70.3], adjacent) == 1
    assert predicted_elbow(ranks, [70.0, 72.0, 74.0, 76.0], adjacent) is None
    # small steps that add up: 2 -> 8 gains 0.6, so 2 is beaten and the elbow is 4
    assert predicted_elbow(ranks, [70.0, 70.3, 70.6, 70.9], later) == 4
