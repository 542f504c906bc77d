"""Synthetic rank sweeps with a known answer, to check the elbow rules' coverage and false-elbow rates (pure).

Two generators. :func:`knee_sweep` (with :func:`recovery`): a sweep rises ``gain`` points per doubling of
the rank up to the knee ``r0`` and is flat after it,

    acc[s, r] = base + gain * log2(min(r, r0)) + seed_s + eps[s, r],
    seed_s ~ N(0, seed_sd^2)   (shared by every rank of seed s: a good seed is good everywhere)
    eps    ~ N(0, run_sd^2)    (per run)

``r0 = inf`` gives a log-linear sweep with no knee in the grid.

:func:`truth_curve` and :func:`simulate` (for ``benchmarks/elbow_coverage.py``): named true curves
(:data:`TRUTHS`) on any grid, rank 0 (head only) included, each with the answer a user wants
(:func:`true_answer`: the smallest swept rank within ``delta`` of the grid's best, or "not reached" when one
more doubling past the grid would gain more than ``delta``), and batches of noisy paired sweeps of them.
With ``x = log2 r`` (rank 0 is placed one doubling below rank 1, ``x = -1``):

    rising      base + gain x                                 (no knee: still rising past the grid)
    saturating  base - b r^-c, b = gain / (1 - 2^-c), c = 0.5 (smooth; gains ``gain`` from r = 1 to 2)
    knee8       base + gain min(x, 3) + after max(x - 3, 0)   (a knee at 8, then ``after`` per doubling)
    knee32      the same with the knee at 32
    knee_top    the knee at the grid's largest rank, flat past it (on the grid the same curve as rising)
    flat        base at every rank
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

__all__ = ["TRUTHS", "RecoveryStats", "knee_sweep", "recovery", "simulate", "true_answer", "truth_curve"]

GRID = (1, 2, 4, 8, 16, 32, 64, 128, 256)
TRUTHS = ("rising", "saturating", "knee8", "knee32", "knee_top", "flat")


def _log2(ranks: Sequence[float]) -> np.ndarray:
    r = np.asarray(ranks, dtype=float)
    return np.log2(np.where(r > 0, r, 0.5))  # rank 0 one doubling below rank 1


def truth_curve(
    truth: str,
    ranks: Sequence[int],
    gain: float = 1.3,
    after: float = 0.15,
    base: float = 70.0,
    c: float = 0.5,
    top: int | None = None,
) -> np.ndarray:
    """Mean accuracy of a named true curve at each rank (see the module docstring).

    ``top`` is the knee of ``knee_top`` (default: the largest rank given); the curve may be evaluated past
    it (:func:`true_answer` looks one doubling past the grid).

    Raises:
        ValueError: an unknown truth.
    """
    x = _log2(ranks)
    knees = {"knee8": 3.0, "knee32": 5.0, "knee_top": math.log2(top if top is not None else max(ranks))}
    if truth == "rising":
        return base + gain * x
    if truth == "saturating":
        return base - gain / (1 - 2**-c) * np.exp2(-c * x)
    if truth in knees:
        k = knees[truth]
        return base + gain * np.minimum(x, k) + (0.0 if truth == "knee_top" else after) * np.maximum(x - k, 0)
    if truth == "flat":
        return np.full(len(x), base)
    raise ValueError(f"Unknown truth {truth!r}; accepted: {', '.join(TRUTHS)}.")


def true_answer(truth: str, ranks: Sequence[int], delta: float, **curve_kwargs: Any) -> int:
    """The answer a user wants of a true curve on a grid, as an index into ``ranks`` (``len(ranks)``: not reached).

    Not reached: one doubling past the grid's largest rank gains more than ``delta``. Otherwise the smallest
    swept rank whose mean is within ``delta`` of the best swept rank's (strictly: ``mu_r > max mu - delta``).
    """
    ranks = list(ranks)
    top = curve_kwargs.pop("top", max(ranks))
    mu = truth_curve(truth, [*ranks, 2 * max(ranks)], top=top, **curve_kwargs)
    if mu[-1] - mu[:-1].max() > delta:
        return len(ranks)
    return int(np.argmax(mu[:-1] > mu[:-1].max() - delta))


def simulate(
    rng: np.random.Generator,
    means: np.ndarray,
    n_seeds: int,
    replicates: int,
    run_sd: float = 0.95,
    seed_sd: float = 0.6,
) -> np.ndarray:
    """Noisy paired sweeps of true means: ``means[r] + seed_s + eps[s, r]``, shape ``(replicates, n_seeds, K)``.

    ``seed_s ~ N(0, seed_sd^2)`` is shared by every rank of a seed (a good seed is good everywhere),
    ``eps ~ N(0, run_sd^2)`` is per run.
    """
    seed_fx = rng.normal(0.0, seed_sd, (replicates, n_seeds, 1))
    return np.asarray(means)[None, None, :] + seed_fx + rng.normal(0.0, run_sd, (replicates, n_seeds, len(means)))


def knee_sweep(
    rng: np.random.Generator,
    knee: float,
    ranks: Sequence[int] = GRID,
    gain: float = 2.0,
    n_seeds: int = 3,
    seed_sd: float = 0.7,
    run_sd: float = 0.7,
    base: float = 70.0,
) -> list[tuple[int, int, float]]:
    """One synthetic sweep as ``(rank, seed, accuracy)`` points (see the module docstring)."""
    seed_fx = rng.normal(0.0, seed_sd, n_seeds)
    return [
        (int(r), s, float(base + gain * math.log2(min(r, knee)) + seed_fx[s] + rng.normal(0.0, run_sd)))
        for r in ranks
        for s in range(n_seeds)
    ]


@dataclass
class RecoveryStats:
    """How often the rule recovers the knee over replicates."""

    knee: float
    replicates: int
    within_one_doubling: float  # share of elbows in [knee / 2, 2 knee] (knee = inf: share "not reached")
    exact: float  # share of elbows equal to the knee (inf: "not reached")
    past_knee: float  # share above 2 knee or "not reached" (a finite knee only)
    interval_covers: float  # share of bootstrap intervals containing the knee ("not reached" for inf)
    elbows: dict[str, int]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def recovery(
    knee: float,
    replicates: int,
    seed: int = 0,
    n_boot: int = 200,
    fit_kwargs: dict[str, Any] | None = None,
    **sweep_kwargs: Any,
) -> RecoveryStats:
    """Apply ``fit_elbow`` (with ``fit_kwargs``, curve fits skipped) to ``replicates`` synthetic sweeps
    from :func:`knee_sweep` (with ``sweep_kwargs``)."""
    from .elbow import fit_elbow

    rng = np.random.default_rng(seed)
    within = exact = past = covers = 0
    elbows: dict[str, int] = {}
    order = [*sweep_kwargs.get("ranks", GRID), math.inf]  # "not reached" sorts above every rank
    for i in range(replicates):
        res = fit_elbow(
            knee_sweep(rng, knee, **sweep_kwargs), n_boot=n_boot, seed=i, families=(), **(fit_kwargs or {})
        )
        e = math.inf if res.elbow is None else res.elbow
        elbows[str(res.label)] = elbows.get(str(res.label), 0) + 1
        lo, hi = (math.inf if v is None else v for v in res.interval)
        if math.isinf(knee):
            within += e == math.inf
            exact += e == math.inf
        else:
            within += knee / 2 <= e <= 2 * knee
            exact += e == knee
            past += e > 2 * knee
        covers += lo <= min(knee, order[-1]) <= hi
    n = float(replicates)
    return RecoveryStats(knee, replicates, within / n, exact / n, past / n, covers / n, dict(sorted(elbows.items())))
