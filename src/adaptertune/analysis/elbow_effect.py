"""The rank elbow defined by effect size: the smallest rank shown within ``delta`` points of the best (pure).

The question a user asks of a rank sweep is "what is the smallest rank that is (nearly) as good as the
best one?". ``delta`` says what "nearly" means, in accuracy points. The rule (``EFFECT_RULE``):

    elbow = the smallest swept rank *shown* within ``delta`` points of the best swept rank; "not reached"
    when the largest rank is shown better than every smaller rank by more than ``delta``; "inconclusive"
    when no rank is shown within ``delta`` of the best (too few seeds for this ``delta``).

*Shown within delta of the best*: for every other swept rank ``j``, the one-sided lower confidence bound
at level ``1 - alpha`` of the paired difference ``acc_r - acc_j`` (same seed, mean over seeds) is above
``-delta``. Which rank is the best is not known; requiring the bound against *every* rank covers the best
whichever it is, so no rank is picked from the data and the selection of the best needs no correction
(an intersection-union test: each comparison at level alpha, the claim at level alpha; Berger 1982,
Technometrics 24(4)). ``min_j lower(acc_r - acc_j)`` is itself a one-sided ``1 - alpha`` lower bound of
``acc_r - max_j acc_j``, the bound printed with each rank. With pooled noise it is the plug-in gap to the
best mean minus ``t se``: when several ranks tie for the best, the best mean is biased up, and the rule
pays for not knowing which rank is best by answering a larger rank, not a smaller one.

Error control, what it is and is not: for any one rank more than ``delta`` below the best, the chance that
it is shown is at most ``alpha``. The elbow is the smallest rank shown, so the chance of a claimed elbow
more than ``delta`` below the best is at most ``alpha`` times the number of such ranks that sit near the
``delta`` line. The coverage study (``benchmarks/elbow_coverage.py``, ``results/science/elbow-coverage.md``)
measures at most 3% at alpha 0.05 at the typical measured gain and noise, and at most 6% on flat, low-noise
sweeps (0.5 points per doubling), where two or three ranks sit near that line. (Scanning from the largest
rank down and stopping at the first rank not shown would bound it by ``alpha`` for every curve, at a large
loss of power: measured, e.g. a flat curve with 20 seeds is then within delta in 77% of sweeps, not 100%,
and not kept.) Too few seeds make the rule answer a larger rank or "inconclusive", not a smaller one.

Paired differences use the seeds run at every rank (a seeds x ranks table, rank 0 = head only allowed).
Their standard error is ``pooled`` (default; the residual sd of the block model
``acc[s, r] = mu_r + seed_s + eps``, ``(n - 1)(K - 1)`` degrees of freedom) or ``per-step`` (the sd over
seeds of each pair's differences, ``n - 1`` degrees of freedom), as in :mod:`.elbow`.

Why ``delta = 1.0`` point by default: it is about the run-to-run noise of one training run on our rank
sweeps (block-model residual sd 0.3-1.5 points, median 0.95, ``results/science``): a smaller gain is not
seen in one run and rarely worth doubling an adapter for. It is below the gain of one doubling on the
steeper measured sweeps (1.3-2.8 points per doubling, first to last rank: Fashion-MNIST and MNIST-5k at the
validation grid), so there "one more doubling" is worth more than ``delta`` until the curve bends, and
above it on the flatter ones (0.2-0.9: longer training, the super-class and parity tasks), where a rank
two to four times smaller is within ``delta`` of the largest. It is a user's choice (``--delta``);
``benchmarks/elbow_coverage.py`` gives the seeds it needs (``results/science/elbow-coverage.md``).

Needs scipy (``pip install 'adaptertune[report]'``), imported lazily.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import ConfigError, DataError
from ..extras import require
from .elbow import NOISE_MODELS, paired_table

__all__ = [
    "DEFAULT_DELTA",
    "EFFECT_RULE",
    "INCONCLUSIVE",
    "NOT_REACHED",
    "RULES",
    "EffectElbow",
    "effect_index",
    "fit_effect_elbow",
    "pair_lower_bounds",
]

_logger = logging.getLogger(__name__)
RULES = ("effect", "paired")  # the effect-size rule (default) and the paired-significance rule of .elbow
DEFAULT_DELTA = 1.0
NOT_REACHED = "not reached"
INCONCLUSIVE = "inconclusive"
EFFECT_RULE = (
    "effect-size rule: elbow = smallest swept rank shown within delta = {delta:g} points of the best swept rank "
    "(paired seeds: one-sided {conf:g}% lower bound of acc_r - acc_j > -{delta:g} for every other rank j, "
    "{noise} noise); 'not reached' when the largest rank is shown better than every smaller rank by more than "
    "{delta:g} points; 'inconclusive' when no rank is shown within {delta:g} points"
)


def _check(delta: float, alpha: float, noise: str) -> None:
    if noise not in NOISE_MODELS:
        raise ConfigError(f"Unknown elbow noise model '{noise}'; accepted: {', '.join(NOISE_MODELS)}.")
    if not 0 < alpha < 1:
        raise ConfigError(f"alpha must be in (0, 1), got {alpha:g}.")
    if not (math.isfinite(delta) and delta > 0):
        raise ConfigError(f"delta (accuracy points) must be a finite number > 0, got {delta:g}.")


def pair_lower_bounds(
    y: np.ndarray, alpha: float = 0.05, noise: str = "pooled"
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One-sided ``1 - alpha`` lower bounds of every paired difference ``acc_i - acc_j`` of seeds x ranks tables.

    Args:
        y: accuracies, shape ``(..., n_seeds, K)`` (leading axes: independent tables).
        alpha: one-sided level of each bound.
        noise: ``pooled`` or ``per-step`` standard errors.

    Returns:
        ``(lower, mean, sigma)``: lower bounds and mean differences, shape ``(..., K, K)`` (row ``i``, column
        ``j``: ``acc_i - acc_j``; the diagonal is 0), and the pooled residual sd, shape ``(...)``.
    """
    stats = require("scipy.stats", "The elbow rule")

    n, k = y.shape[-2:]
    mean = y.mean(-2)[..., :, None] - y.mean(-2)[..., None, :]  # (..., K, K)
    resid = y - y.mean(-1, keepdims=True) - y.mean(-2, keepdims=True) + y.mean((-2, -1), keepdims=True)
    sigma = np.sqrt((resid**2).sum((-2, -1)) / ((n - 1) * (k - 1)))  # (...)
    if noise == "pooled":
        se = np.broadcast_to((sigma * math.sqrt(2.0 / n))[..., None, None], mean.shape)
        df = (n - 1) * (k - 1)
    else:
        d = y[..., :, :, None] - y[..., :, None, :]  # (..., n, K, K) per-seed differences
        se, df = d.std(-3, ddof=1) / math.sqrt(n), n - 1
    return mean - stats.t.isf(alpha, df) * se, mean, sigma


def effect_index(
    y: np.ndarray, delta: float = DEFAULT_DELTA, alpha: float = 0.05, noise: str = "pooled"
) -> np.ndarray:
    """The effect-size rule's answer for each of a batch of seeds x ranks tables, as an index.

    Args:
        y: accuracies, shape ``(..., n_seeds, K)``, ranks ascending along the last axis.

    Returns:
        Integer array of shape ``(...)``: ``0..K-1`` the elbow's index, ``K`` not reached, ``-1`` inconclusive.
    """
    _check(delta, alpha, noise)
    k = y.shape[-1]
    lower, _, _ = pair_lower_bounds(y, alpha, noise)
    eye = np.eye(k, dtype=bool)
    worst = np.where(eye, np.inf, lower).min(-1)  # (..., K): lower bound of acc_r - max_j acc_j
    shown = worst > -delta
    idx = np.where(shown.any(-1), shown.argmax(-1), -1)  # the smallest rank shown
    top_gain = lower[..., -1, :-1].min(-1)  # lower bound of acc_top - max_{j < top} acc_j
    return np.where(top_gain > delta, k, idx)


@dataclass
class EffectElbow:
    """The elbow of one rank sweep by the effect-size rule, with every rank's bound against the best.

    ``elbow`` is a swept rank, or None when the verdict is "not reached" or "inconclusive".
    """

    verdict: str  # "elbow", NOT_REACHED or INCONCLUSIVE
    elbow: int | None
    delta: float
    alpha: float
    noise: str
    rule: str
    sigma: float  # pooled residual sd of one run (seed effects removed)
    ranks: list[int]
    seeds: list[Any]
    dropped_seeds: list[Any]
    mean_acc: list[float]
    std_acc: list[float]  # over seeds (ddof=1)
    best: int  # the rank with the best mean (shown for reading; the rule does not select it)
    gap: list[float]  # per rank: mean acc_r - mean acc_best
    lower: list[float]  # per rank: one-sided lower bound of acc_r - max_j acc_j (min over j of the pair bounds)
    shown: list[bool]  # lower > -delta
    top_gain: float  # lower bound of acc_top - max over smaller ranks (not reached when > delta)
    points: list[tuple[int, Any, float]] = field(repr=False)

    @property
    def reached(self) -> bool:
        return self.elbow is not None

    @property
    def label(self) -> str | int:
        """The verdict as text: a rank, ``not reached`` or ``inconclusive``."""
        return self.elbow if self.elbow is not None else self.verdict

    @property
    def interval_label(self) -> str:
        """The bound behind the verdict, e.g. ``acc(16) - best >= -0.62 (95%)``."""
        conf = f"{(1 - self.alpha) * 100:g}%"
        if self.verdict == NOT_REACHED:
            return f"acc({self.ranks[-1]}) - best smaller >= {self.top_gain:+.2f} ({conf})"
        r = self.elbow if self.elbow is not None else self.ranks[-1]
        return f"acc({r}) - best >= {self.lower[self.ranks.index(r)]:+.2f} ({conf})"

    def to_dict(self) -> dict[str, Any]:
        d = {k: getattr(self, k) for k in self.__dataclass_fields__ if k != "points"}
        d.update(elbow=self.label, rule_name="effect", interval=self.interval_label)
        d["points"] = [list(p) for p in self.points]
        return d


def fit_effect_elbow(
    points: Iterable[tuple[int, Any, float]],
    delta: float = DEFAULT_DELTA,
    alpha: float = 0.05,
    noise: str = "pooled",
) -> EffectElbow:
    """The elbow of a rank sweep by the effect-size rule (see the module docstring).

    Args:
        points: ``(rank, seed, accuracy)`` per run, accuracy in points; rank 0 (head only) is allowed. Seeds
            not run at every rank are dropped (and listed).
        delta: how far below the best rank (accuracy points) still counts as "as good".
        alpha: one-sided level of every bound (the chance that a given rank more than ``delta`` below the
            best is shown within ``delta``).
        noise: ``pooled`` or ``per-step`` standard errors.

    Returns:
        An :class:`EffectElbow`.

    Raises:
        DataError: fewer than 2 ranks, fewer than 2 seeds run at every rank, or differences without noise.
        ConfigError: a bad ``delta``, ``alpha`` or ``noise``.

    Example:
        >>> pts = [(r, s, 70 + 2 * math.log2(min(r, 16)) + 0.5 * s + 0.3 * ((r + s) % 3))
        ...        for r in (1, 2, 4, 8, 16, 32, 64) for s in range(6)]
        >>> fit_effect_elbow(pts).label
        16
    """
    _check(delta, alpha, noise)
    pts = list(points)
    ranks, seeds, y, dropped = paired_table(pts, min_rank=0)
    if dropped:
        _logger.warning("elbow: seeds %s are not run at every rank and were left out", dropped)
    k = len(ranks)
    lower, mean, sigma = pair_lower_bounds(y, alpha, noise)
    if not np.all(np.isfinite(lower)) or (noise == "pooled" and sigma == 0):
        raise DataError(
            "The paired differences do not vary over seeds (every seed differs exactly the same), so their "
            "noise cannot be measured; check that the seeds are distinct runs."
        )
    if noise == "per-step":
        d = y[:, :, None] - y[:, None, :]
        if np.any(d.std(0, ddof=1)[~np.eye(k, dtype=bool)] == 0):
            raise DataError(
                "Some pair of ranks differs by exactly the same amount on every seed, so its noise cannot be "
                "measured with per-step noise; use --noise pooled or check that the seeds are distinct runs."
            )
    idx = int(effect_index(y, delta, alpha, noise))
    worst = np.where(np.eye(k, dtype=bool), np.inf, lower).min(1)
    m = y.mean(0)
    best = int(np.argmax(m))
    verdict = NOT_REACHED if idx == k else INCONCLUSIVE if idx < 0 else "elbow"
    kept = {str(s) for s in seeds}
    return EffectElbow(
        verdict=verdict,
        elbow=int(ranks[idx]) if 0 <= idx < k else None,
        delta=float(delta),
        alpha=float(alpha),
        noise=noise,
        rule=EFFECT_RULE.format(delta=delta, conf=(1 - alpha) * 100, noise=noise),
        sigma=float(sigma),
        ranks=[int(r) for r in ranks],
        seeds=seeds,
        dropped_seeds=dropped,
        mean_acc=[float(v) for v in m],
        std_acc=[float(v) for v in y.std(0, ddof=1)],
        best=int(ranks[best]),
        gap=[float(v) for v in m - m[best]],
        lower=[float(v) for v in worst],
        shown=[bool(v) for v in worst > -delta],
        top_gain=float(lower[-1, :-1].min()),
        points=[(int(r), s, float(a)) for r, s, a in pts if str(s) in kept],
    )
