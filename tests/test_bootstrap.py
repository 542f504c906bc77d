"""The seeds + test-images bootstrap on synthetic data with known answers: coverage where it holds and where
it fails, pairing, pooling, and the t-interval's under-coverage when test-set noise dominates."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.special import ndtr

from adaptertune.errors import AdapterTuneError
from adaptertune.reports.bootstrap import (
    all_noise_verdict,
    bootstrap_replicates,
    mean_interval,
    paired_interval,
    pooled_interval,
)
from adaptertune.reports.stats import t_interval


def simulate(rng, seeds, images, seed_sd, image_sd=2.0, contrast_sd=1.5, a=1.0, b=0.9, shared=True):
    """Two methods' 0/1 correctness (seeds x images) from a probit model with a known population answer.

    P(correct) = Phi(alpha + z_i +- w_i / 2 + u_s): z_i the image's difficulty (both methods), w_i where one
    method beats the other, u_s each method's own seed effect. ``shared``: every seed tests the same images
    (a fixed test split); else each seed draws its own. Truth: E Phi(alpha + X) = Phi(alpha / sqrt(1 + var X)).
    """
    n = images if shared else images * seeds
    z, w = rng.normal(0, image_sd, n), rng.normal(0, contrast_sd, n)
    z, w = (z[None], w[None]) if shared else (z.reshape(seeds, images), w.reshape(seeds, images))
    pa = ndtr(a + z + w / 2 + rng.normal(0, seed_sd, (seeds, 1)))
    pb = ndtr(b + z - w / 2 + rng.normal(0, seed_sd, (seeds, 1)))
    scale = math.sqrt(1 + image_sd**2 + contrast_sd**2 / 4 + seed_sd**2)
    truth_a, truth_b = ndtr(a / scale), ndtr(b / scale)
    return (rng.random(pa.shape) < pa) * 1.0, (rng.random(pb.shape) < pb) * 1.0, truth_a, truth_a - truth_b


def coverage(seed_sd, shared=True, design="shared", experiments=300, seeds=5, images=200, **kw):
    """Share of simulated experiments whose interval holds the truth: (bootstrap, t over seeds, both joined)."""
    rng = np.random.default_rng(round(seed_sd * 1000) + shared)
    boot = t = joined = 0
    for e in range(experiments):
        a, b, _, truth = simulate(rng, seeds, images, seed_sd, shared=shared, **kw)
        iv = paired_interval(a, b, images=design, n_resamples=400, seed=e)
        lo, hi = t_interval((a - b).mean(1))
        boot += iv.low <= truth <= iv.high
        t += lo <= truth <= hi
        joined += min(lo, iv.low) <= truth <= max(hi, iv.high)
    return boot / experiments, t / experiments, joined / experiments


def test_test_noise_dominates_the_bootstrap_covers_and_the_t_interval_does_not():
    """A fixed test split (seeds share the images), small seed noise: the t-interval over 5 seeds misses the
    test set's own luck; the crossed bootstrap counts it (slightly conservative, as Owen's pigeonhole is)."""
    boot, t, joined = coverage(seed_sd=0.02)
    assert 0.93 <= boot <= 1.0, boot
    assert t <= 0.88, t  # the point of the bootstrap: measured 0.80 over 1000 experiments (bootstrap 0.98)
    assert joined >= 0.93


def test_resampling_shared_images_per_seed_undercounts_them():
    """Images drawn independently per seed, on a split every seed shares, count the image effect S times too
    weakly: the wrong design for a fixed test set under-covers."""
    boot, _, _ = coverage(seed_sd=0.02, design="per_seed")
    assert boot <= 0.92, boot  # measured 0.89 over 1000 experiments


def test_seed_noise_dominates_at_5_seeds_the_bootstrap_undercovers_and_the_joined_rule_does_not():
    """Where the bootstrap fails: 5 seeds, seed noise far above test noise. Its percentiles act like a z-interval
    on 5 values (too narrow); the t-interval holds, so the verdict requires both (all_noise_verdict)."""
    boot, t, joined = coverage(seed_sd=0.6, image_sd=0.5, contrast_sd=0.5)
    assert boot <= 0.90, boot  # measured 0.85 over 1000 experiments (0.90 at seed sd 0.4)
    assert t >= 0.92 and joined >= 0.93, (t, joined)


def test_own_images_per_seed_nested_design_covers():
    """Each seed tests its own images (e.g. a test subset drawn per seed): the nested bootstrap covers, and the
    t-interval does too (each seed's accuracy already carries its images' noise)."""
    boot, t, _ = coverage(seed_sd=0.1, shared=False, design="per_seed")
    assert 0.92 <= boot <= 0.99 and 0.92 <= t <= 0.98, (boot, t)


def test_one_method_accuracy_interval_covers_the_population_accuracy():
    rng = np.random.default_rng(4)
    hits = 0
    for e in range(200):
        a, _, truth_a, _ = simulate(rng, 5, 200, seed_sd=0.05)
        iv = mean_interval(a, n_resamples=400, seed=e)
        hits += iv.low <= truth_a <= iv.high
    assert 0.92 <= hits / 200 <= 1.0  # measured 0.953 and 0.958 over 1000 experiments (two streams)


def test_replicate_spread_matches_the_variance_it_should_count():
    """Known answers for the replicate variance: seeds that all score the same images identically leave only
    image noise, var(x)/N; distinct seeds with constant images leave only seed noise, (S-1)/S var(means)/S."""
    rng = np.random.default_rng(0)
    x = rng.integers(0, 2, 400).astype(float)
    reps = bootstrap_replicates(np.stack([x] * 4), "shared", 4000, np.random.default_rng(1))
    assert reps.std() == pytest.approx(x.std() / math.sqrt(400), rel=0.06)
    means = np.array([0.70, 0.74, 0.78, 0.82, 0.76])
    rows = np.repeat(means[:, None], 50, axis=1)
    for design in ("shared", "per_seed"):
        reps = bootstrap_replicates(rows, design, 4000, np.random.default_rng(2))
        assert reps.std() == pytest.approx(means.std() / math.sqrt(5), rel=0.06)
        assert reps.mean() == pytest.approx(means.mean(), abs=0.002)


def test_pairing_cancels_what_both_methods_share():
    """Two methods wrong on the same images but 6: the paired interval of the difference is far narrower than
    drawing their images independently would give, and identical methods give exactly [0, 0]."""
    rng = np.random.default_rng(5)
    a = (rng.random((5, 300)) < 0.8) * 1.0
    b = a.copy()
    b[:, :6] = 1 - b[:, :6]  # they differ on 6 of 300 images
    d = paired_interval(a, b)
    wa, wb = (iv.high - iv.low for iv in (mean_interval(a), mean_interval(b)))
    assert d.high - d.low < math.hypot(wa, wb) / 3  # unpaired draws would add the two spreads
    same = paired_interval(a, a)
    assert (same.mean, same.low, same.high) == (0.0, 0.0, 0.0)


def test_point_estimate_seeded_and_few_seeds():
    vals = [[1, 0, 1, 1], [0, 0, 1, 1], [1, 1, 1, 1]]
    iv = mean_interval(vals, n_resamples=300, seed=4)
    assert iv.mean == pytest.approx(0.75) and (iv.n_seeds, iv.n_images, iv.images) == (3, 4, "shared")
    assert iv == mean_interval(vals, n_resamples=300, seed=4)  # seeded: reproducible
    one = mean_interval([[1, 0, 1, 1]])
    assert one.mean == 0.75 and math.isnan(one.low) and math.isnan(one.high)
    ragged = mean_interval([[1, 0], [1, 1, 1, 0]], images="per_seed", n_resamples=300)
    assert ragged.mean == pytest.approx((0.5 + 0.75) / 2) and ragged.n_images == 4


def test_pooled_over_datasets_known_answer_and_coverage():
    # no noise anywhere: the pooled value is the equal-weight mean of the dataset means, whatever their sizes
    flat = pooled_interval([np.full((3, 10), 2.0), np.full((4, 50), -1.0)], n_resamples=200)
    assert (flat.mean, flat.low, flat.high) == (0.5, 0.5, 0.5) and flat.n_seeds == 3
    # K datasets with known truths: the pooled interval covers the mean truth, and is narrower than one dataset's
    rng = np.random.default_rng(9)
    hits, widths, single = 0, [], []
    for e in range(150):
        sims = [simulate(rng, 5, 150, seed_sd=0.05, a=1.0, b=0.9 - 0.1 * k) for k in range(3)]
        iv = pooled_interval([s[0] - s[1] for s in sims], n_resamples=400, seed=e)
        hits += iv.low <= np.mean([s[3] for s in sims]) <= iv.high
        widths.append(iv.high - iv.low)
        one = paired_interval(sims[0][0], sims[0][1], n_resamples=400, seed=e)
        single.append(one.high - one.low)
    assert 0.92 <= hits / 150 <= 1.0
    assert np.mean(widths) < 0.75 * np.mean(single)  # about 1/sqrt(3) as wide


def test_all_noise_verdict_needs_both_intervals():
    assert all_noise_verdict(0.1, 2.0, 0.2, 1.9) == "win"
    assert all_noise_verdict(0.1, 2.0, -0.2, 1.9) == "tie"  # test noise could explain it
    assert all_noise_verdict(-0.1, 2.0, 0.2, 1.9) == "tie"  # seed noise could explain it
    assert all_noise_verdict(-2.0, -0.1, -1.5, -0.3) == "loss"
    assert all_noise_verdict(0.1, 2.0, math.nan, math.nan) == "tie"


def test_bad_inputs_are_named():
    with pytest.raises(AdapterTuneError, match="same test images"):
        mean_interval([[1, 0], [1, 0, 1]])
    with pytest.raises(AdapterTuneError, match="Unknown image design 'nested'"):
        mean_interval([[1, 0], [1, 0]], images="nested")
    with pytest.raises(AdapterTuneError, match="aligned"):
        paired_interval([[1, 0], [1, 1]], [[1, 0], [1, 1, 0]])
    with pytest.raises(AdapterTuneError, match="no test images"):
        mean_interval([[], []])
