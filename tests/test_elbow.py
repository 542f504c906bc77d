"""The elbow fit recovers a known elbow from noisy synthetic sweeps."""

from __future__ import annotations

import numpy as np
import pytest

from adaptertune.errors import DataError
from adaptertune.analysis.elbow import doubling_gain, elbow_rank, elbow_table, fit_elbow, power_law

GRID = [1, 2, 4, 8, 16, 32, 64]


def _sweep(a: float, b: float, c: float, sigma: float, seeds: int, rng_seed: int = 0) -> list[tuple[int, float]]:
    rng = np.random.default_rng(rng_seed)
    return [(r, float(power_law(r, a, b, c) + sigma * rng.standard_normal())) for r in GRID for _ in range(seeds)]


def test_power_law_and_gain_are_consistent():
    r = np.array([1.0, 3.0, 10.0])
    assert np.allclose(doubling_gain(r, 5.0, 0.8), power_law(2 * r, 90, 5.0, 0.8) - power_law(r, 90, 5.0, 0.8))


def test_elbow_rank_rule():
    # gain(r) = 20 r^-1 / 2 = 10 / r: below 1.5 from r = 8 on
    assert elbow_rank(GRID, 20.0, 1.0, 1.5) == (8, True)
    assert elbow_rank(GRID, 20.0, 1.0, 0.01) == (64, False)


def test_recovers_known_elbow_from_noisy_sweep():
    a, b, c, sigma, seeds = 90.0, 20.0, 1.0, 1.0, 5
    # true noise threshold = sigma / sqrt(seeds) = 0.447; gain(r) = 10/r < 0.447 from r = 32 on
    true_elbow = elbow_rank(GRID, b, c, sigma / np.sqrt(seeds))[0]
    assert true_elbow == 32
    fit = fit_elbow(_sweep(a, b, c, sigma, seeds), n_boot=200, seed=0)
    assert fit.params["a"] == pytest.approx(a, abs=1.5)
    assert fit.params["c"] == pytest.approx(c, abs=0.35)
    assert fit.noise == pytest.approx(sigma / np.sqrt(seeds), rel=0.4)
    assert fit.elbow in (16, 32, 64)
    assert fit.interval[0] <= true_elbow <= fit.interval[1]
    assert fit.interval[0] <= fit.elbow <= fit.interval[1]
    assert len(fit.curve_r) == len(fit.curve_acc) == 64
    assert fit.n_seeds == [seeds] * len(GRID)


def test_early_elbow_and_bootstrap_is_seeded():
    pts = _sweep(85.0, 30.0, 2.0, 0.5, 3, rng_seed=3)  # gain 22.5/r^2: below 0.29 from r = 16
    f1, f2 = fit_elbow(pts, n_boot=100, seed=7), fit_elbow(pts, n_boot=100, seed=7)
    assert f1.elbow in (8, 16)
    assert f1.interval == f2.interval and f1.elbow == f2.elbow
    assert f1.interval[1] <= 32


def test_flat_curve_elbow_is_smallest_rank():
    pts = _sweep(70.0, 0.0, 1.0, 0.5, 3, rng_seed=1)
    fit = fit_elbow(pts, n_boot=50)
    assert fit.elbow <= 2 and fit.reached


def test_log_linear_sweep_is_not_reached_and_says_so():
    """A constant 1.6 points per doubling (the quick protocol's shape) has no elbow on the grid."""
    rng = np.random.default_rng(2)
    pts = [(r, 70.0 + 1.6 * np.log2(r) + 0.8 * rng.standard_normal()) for r in GRID for _ in range(3)]
    fit = fit_elbow(pts, n_boot=50)
    assert not fit.reached and fit.elbow == 64 and fit.log_linear
    assert fit.top_gain == pytest.approx(1.6, abs=0.4) and fit.top_gain > fit.threshold
    # MNIST-5k's quick-protocol shape: ~3 points per doubling, seeds within ~1 point (c -> 0 must not overflow)
    steep = [(r, 75.0 + 3.0 * np.log2(r) + 0.5 * rng.standard_normal()) for r in GRID for _ in range(3)]
    fit = fit_elbow(steep, n_boot=50)
    assert not fit.reached and fit.log_linear and 64 < fit.elbow_continuous <= 2.0**30
    curved = fit_elbow(_sweep(90.0, 20.0, 1.0, 1.0, 5), n_boot=0)
    assert not curved.log_linear
    p = curved.params
    assert curved.top_gain == pytest.approx(float(doubling_gain(64, p["b"], p["c"], p["e"])))


def test_estimation_term_bends_a_log_linear_curve():
    """Log-linear at small r, flat later (the quick protocol's shape): only the e r term finds the elbow."""
    a, b, c, e, sigma, seeds = 110.0, 40.0, 0.05, 0.03, 0.8, 5
    assert elbow_rank(GRID, b, c, sigma / np.sqrt(seeds), e) == (32, True)  # gains 1.33 .. 0.70 (16), 0.19 (32)
    assert np.allclose(
        doubling_gain(np.array([3.0, 7.0]), b, c, e), np.diff(power_law([[3, 7], [6, 14]], a, b, c, e), axis=0)
    )
    rng = np.random.default_rng(4)
    pts = [(r, float(power_law(r, a, b, c, e) + sigma * rng.standard_normal())) for r in GRID for _ in range(seeds)]
    fit = fit_elbow(pts, n_boot=100, seed=0)
    assert fit.reached and fit.elbow in (16, 32) and fit.interval[0] <= 32 <= fit.interval[1]
    assert fit.params["e"] > 0 and not fit.log_linear


def test_bad_input_is_a_clear_error():
    with pytest.raises(DataError, match="3 distinct ranks"):
        fit_elbow([(1, 50.0), (1, 51.0), (2, 60.0), (2, 61.0)])
    with pytest.raises(DataError, match="two seeds"):
        fit_elbow([(1, 50.0), (2, 60.0), (4, 65.0)])


def test_elbow_table_groups_pairs_and_reports_unfittable_ones():
    rows = [
        {"dataset": "d1", "backbone": "b", "method": "adapter", "rank": r, "seed": s, "test_acc": a}
        for (r, a), s in zip(_sweep(90.0, 20.0, 1.0, 1.0, 3), [0, 1, 2] * len(GRID))
    ]
    rows += [{"dataset": "d2", "backbone": "b", "method": "adapter", "rank": 4, "seed": 0, "test_acc": 50.0}]
    rows += [{"dataset": "d1", "backbone": "b", "method": "head", "rank": None, "seed": 0, "test_acc": 10.0}]
    table = elbow_table(rows, n_boot=20)
    assert [(t.dataset, t.fit is not None) for t in table] == [("d1", True), ("d2", False)]
    assert "3 distinct ranks" in table[1].reason
    assert table[0].fit.n_seeds == [3] * len(GRID)


def test_plot_elbow_draws(tmp_path):
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from adaptertune.analysis.elbow import plot_elbow

    fig, ax = plt.subplots()
    plot_elbow(ax, fit_elbow(_sweep(90.0, 20.0, 1.0, 1.0, 3), n_boot=20), label="d1")
    fig.savefig(tmp_path / "elbow.png")
    assert (tmp_path / "elbow.png").stat().st_size > 1000
