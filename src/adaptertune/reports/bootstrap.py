"""Bootstrap intervals that count test-set noise as well as seed noise, from per-image results.

A method's test accuracy varies with the seed (init, data order and, with ``data.subset_per_seed``, the
training subset) and with the test images (a new test set of the same size would score differently: the
binomial SE of a 1000-image accuracy near 80% is 1.3 points). A t-interval over per-seed accuracies counts
only the first. The intervals here count both, from each run's per-image values (0/1 correctness, or 100 x
correctness for points):

- :func:`mean_interval`: one method's mean accuracy over seeds.
- :func:`paired_interval`: the mean difference between two methods, on the same test images at each seed
  (the per-image differences ``a - b`` are resampled, so both methods always get the same image draws).
- :func:`pooled_interval`: the mean over K datasets (equal weight) of per-dataset values, each dataset
  resampled independently (its own seeds and images).

One replicate draws the seeds with replacement, and the test images with replacement, then takes the mean
over the drawn seeds of each seed's mean over the drawn images; the interval is the percentile interval of
``n_resamples`` replicates (a seeded generator: the report is reproducible). How the images are drawn
depends on how the seeds share them (``images``):

- ``"shared"`` (every seed tested on the same images, the usual fixed test split): ONE image draw per
  replicate, used by every drawn seed (seeds and images are crossed: an image that is hard for one seed is
  hard for all, so resampling it per seed would count its effect S times too weakly). This is Owen's
  pigeonhole bootstrap (Owen 2007, "The pigeonhole bootstrap", Ann. Appl. Stat.), slightly conservative.
- ``"per_seed"`` (each seed has its own test images): an independent image draw for every drawn seed
  (images nested in seeds, the two-stage bootstrap of Davison & Hinkley 1997, section 3.8).

What the interval covers: the seed noise of the runs given (whatever their seeds vary: init and data order,
plus the training subset when the seeds draw it) and the test-image noise (a new test set drawn from the same
population). Not covered: the choice of hyper-parameters, the validation split, the dataset itself. With few
seeds the seed part is under-counted (a bootstrap over 5 values spreads ``sqrt(4/5)`` as wide as the truth and
its percentiles are coarse): when seed noise dominates, coverage falls below nominal
(tests/test_bootstrap.py measures both regimes).

All functions are pure: arrays in, numbers out.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from ..errors import AdapterTuneError
from .stats import verdict

__all__ = [
    "ALL_NOISE_RULE",
    "DEFAULT_RESAMPLES",
    "IMAGE_DESIGNS",
    "MIN_SEEDS",
    "BootInterval",
    "all_noise_verdict",
    "bootstrap_replicates",
    "mean_interval",
    "paired_interval",
    "pooled_interval",
]

DEFAULT_RESAMPLES = 2000
MIN_SEEDS = 2  # fewer seeds: no interval (as for the t-interval), the verdict is a tie
IMAGE_DESIGNS = ("shared", "per_seed")
ImageDesign = Literal["shared", "per_seed"]
ALL_NOISE_RULE = (
    "Verdict (seeds + test images): win = both the 95% t-interval over paired seeds and the 95% paired "
    "bootstrap interval over seeds and test images lie entirely above 0, loss = both entirely below 0, tie "
    "otherwise. The t-interval alone misses test-set noise (a fixed test set); the bootstrap alone is too "
    "narrow when seed noise dominates at few seeds; requiring both keeps coverage near 95% in either case."
)
_CHUNK = 256  # replicates per batch: memory ~ _CHUNK x images floats


@dataclass(frozen=True)
class BootInterval:
    """A mean over seeds (of per-seed means over images) and its percentile bootstrap interval."""

    mean: float
    low: float  # nan with fewer than MIN_SEEDS seeds
    high: float
    n_seeds: int
    n_images: int  # images per seed (the largest, for ragged "per_seed" input)
    images: str  # "shared" or "per_seed": how the replicates drew the images


def _as_seeds(values: Sequence[Sequence[float]] | np.ndarray, images: str) -> list[np.ndarray]:
    if images not in IMAGE_DESIGNS:
        raise AdapterTuneError(f"Unknown image design '{images}'; expected one of: {', '.join(IMAGE_DESIGNS)}.")
    seeds = [np.asarray(v, dtype=np.float64).ravel() for v in values]
    if any(len(v) == 0 for v in seeds):
        raise AdapterTuneError("A seed has no test images; every seed needs at least one per-image value.")
    if images == "shared" and len({len(v) for v in seeds}) > 1:
        sizes = sorted({len(v) for v in seeds})
        raise AdapterTuneError(
            f"images='shared' needs the same test images at every seed, got {sizes} images; align them by "
            "index, or pass images='per_seed' when each seed has its own test images."
        )
    return seeds


def bootstrap_replicates(
    values: Sequence[Sequence[float]] | np.ndarray,
    images: ImageDesign = "shared",
    n_resamples: int = DEFAULT_RESAMPLES,
    rng: np.random.Generator | None = None,
) -> np.ndarray:
    """``n_resamples`` bootstrap replicates of the mean over seeds of per-seed image means.

    Args:
        values: one 1-D array of per-image values per seed (for ``"shared"``, an S x N matrix works too;
            column i must be the same image at every seed).
        images: ``"shared"`` (one image draw per replicate for all seeds) or ``"per_seed"`` (a draw per
            drawn seed); see the module docstring.
        n_resamples: replicates.
        rng: the generator (default: seed 0).
    """
    seeds = _as_seeds(values, images)
    rng = rng if rng is not None else np.random.default_rng(0)
    s = len(seeds)
    out = np.empty(n_resamples)
    for start in range(0, n_resamples, _CHUNK):
        b = min(_CHUNK, n_resamples - start)
        if images == "shared":
            x = np.stack(seeds)  # S x N
            seed_counts = rng.multinomial(s, np.full(s, 1 / s), size=b)  # b x S
            per_image = seed_counts @ x / s  # b x N: each image's mean over the drawn seeds
            drawn_images = rng.integers(0, x.shape[1], size=(b, x.shape[1]))  # one draw for all seeds
            out[start : start + b] = np.take_along_axis(per_image, drawn_images, 1).mean(1)
            continue
        drawn = rng.integers(0, s, size=(b, s))  # the seeds of each replicate
        total = np.zeros(b)
        for j, x in enumerate(seeds):
            times = (drawn == j).sum(1)  # how often replicate r drew seed j; each draw gets its own images
            k = int(times.sum())
            if k == 0:
                continue
            means = x[rng.integers(0, len(x), size=(k, len(x)))].mean(1)
            total += np.bincount(np.repeat(np.arange(b), times), weights=means, minlength=b)
        out[start : start + b] = total / s
    return out


def _interval(reps: np.ndarray, level: float) -> tuple[float, float]:
    lo, hi = np.quantile(reps, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


def _point(seeds: list[np.ndarray]) -> float:
    return float(np.mean([v.mean() for v in seeds]))


def mean_interval(
    values: Sequence[Sequence[float]] | np.ndarray,
    images: ImageDesign = "shared",
    level: float = 0.95,
    n_resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
) -> BootInterval:
    """The mean over seeds of per-image ``values`` (e.g. 100 x correctness: accuracy in points), with its
    percentile interval over seeds and test images (nan bounds with fewer than :data:`MIN_SEEDS` seeds).

    Example:
        >>> iv = mean_interval([[1, 1, 0, 1], [1, 0, 0, 1], [1, 1, 1, 1]], n_resamples=500)
        >>> round(iv.mean, 4), iv.n_seeds, iv.low <= iv.mean <= iv.high
        (0.75, 3, True)
    """
    seeds = _as_seeds(values, images)
    mean, n_img = _point(seeds), max(len(v) for v in seeds)
    if len(seeds) < MIN_SEEDS:
        return BootInterval(mean, math.nan, math.nan, len(seeds), n_img, images)
    reps = bootstrap_replicates(seeds, images, n_resamples, np.random.default_rng(seed))
    return BootInterval(mean, *_interval(reps, level), len(seeds), n_img, images)


def paired_interval(
    a: Sequence[Sequence[float]] | np.ndarray,
    b: Sequence[Sequence[float]] | np.ndarray,
    images: ImageDesign = "shared",
    level: float = 0.95,
    n_resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
) -> BootInterval:
    """Mean over paired seeds of ``a - b`` and its interval: ``a[s][i]`` and ``b[s][i]`` are the two
    methods' values on the same test image ``i`` at the same seed ``s`` (paired: every replicate draws the
    same images for both)."""
    if len(a) != len(b):
        raise AdapterTuneError(f"Paired seeds differ in number: {len(a)} vs {len(b)}; pass the seeds both ran.")
    diffs = []
    for s, (x, y) in enumerate(zip(a, b, strict=True)):
        x, y = np.asarray(x, dtype=np.float64).ravel(), np.asarray(y, dtype=np.float64).ravel()
        if x.shape != y.shape:
            raise AdapterTuneError(
                f"Seed {s}: {len(x)} vs {len(y)} test images; the two methods must be aligned on the same images."
            )
        diffs.append(x - y)
    return mean_interval(diffs, images, level, n_resamples, seed)


def pooled_interval(
    datasets: Sequence[Sequence[Sequence[float]] | np.ndarray],
    images: ImageDesign | Sequence[ImageDesign] = "shared",
    level: float = 0.95,
    n_resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
) -> BootInterval:
    """Equal-weight mean over K datasets of each dataset's mean over seeds (of per-image values, e.g. paired
    differences ``a - b``), with an interval whose replicates resample every dataset independently (its seeds
    and its images) and average them: "pooled over K datasets, equal weight". ``n_seeds`` is the smallest
    dataset's; nan bounds when a dataset has fewer than :data:`MIN_SEEDS` seeds."""
    if not datasets:
        raise AdapterTuneError("pooled_interval needs at least one dataset.")
    designs = [images] * len(datasets) if isinstance(images, str) else list(images)
    if len(designs) != len(datasets):
        raise AdapterTuneError(f"{len(designs)} image designs for {len(datasets)} datasets; give one per dataset.")
    per = [_as_seeds(d, i) for d, i in zip(datasets, designs, strict=True)]
    mean = float(np.mean([_point(s) for s in per]))
    n_seeds, n_img = min(len(s) for s in per), max(len(v) for s in per for v in s)
    label = designs[0] if len(set(designs)) == 1 else "mixed"
    if n_seeds < MIN_SEEDS:
        return BootInterval(mean, math.nan, math.nan, n_seeds, n_img, label)
    rngs = [np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(len(per))]
    reps = np.mean([bootstrap_replicates(s, d, n_resamples, r) for s, d, r in zip(per, designs, rngs, strict=True)], 0)
    return BootInterval(mean, *_interval(reps, level), n_seeds, n_img, label)


def all_noise_verdict(t_low: float, t_high: float, boot_low: float, boot_high: float) -> str:
    """The verdict of :data:`ALL_NOISE_RULE`: ``win`` when both the t-interval over seeds and the bootstrap
    interval over seeds and test images lie above 0, ``loss`` when both lie below, ``tie`` otherwise (and
    without a bootstrap interval)."""
    if math.isnan(boot_low) or math.isnan(boot_high):
        return "tie"
    return verdict(min(t_low, boot_low), max(t_high, boot_high))
