"""Synthetic rank sweeps with a known knee, to check the elbow rule's recovery and false-elbow rates (pure).

A sweep rises ``gain`` points per doubling of the rank up to the knee ``r0`` and is flat after it,

    acc[s, r] = base + gain * log2(min(r, r0)) + seed_s + eps[s, r],
    seed_s ~ N(0, seed_sd^2)   (shared by every rank of seed s: a good seed is good everywhere)
    eps    ~ N(0, run_sd^2)    (per run)

``r0 = inf`` gives a log-linear sweep with no knee in the grid.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

__all__ = ["RecoveryStats", "knee_sweep", "recovery"]

GRID = (1, 2, 4, 8, 16, 32, 64, 128, 256)


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
