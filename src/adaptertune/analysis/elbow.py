"""The rank elbow of a sweep, model-free on paired seeds, with curve fits beside it (pure).

The rule (``RULE``, stated once and printed next to every elbow):

    elbow = the smallest swept rank r such that no rank >= r is beaten significantly (paired seeds)
    by a larger swept rank; "not reached" when the largest rank still beats the one below it.

Which larger ranks are compared is ``compare``: ``later`` (default) compares every rank with every larger
one (r vs 2r, 4r, ...: gains too small to show in one doubling can add up over several), ``adjacent``
only with the next swept rank (the literal "one more doubling"; on a fine grid with noisy seeds each
step can be too small to show although the sweep rises by many points overall).

A *paired* gain compares the same seed at two ranks, so a seed that is good everywhere cancels out. The
accuracies form a seeds x ranks table ``Y`` (seeds run at every rank; others are dropped and listed). The
gain from rank ``i`` to ``j`` is ``mean_s(Y[s, j] - Y[s, i])``; its standard error is either

- ``pooled`` (default): ``sigma sqrt(2 / n)`` with ``sigma^2`` the residual variance of the additive
  model ``Y[s, k] = mu_k + seed_s + eps`` (a randomized block design, seeds as blocks), with
  ``(n - 1)(K - 1)`` degrees of freedom, or
- ``per-step``: the standard deviation over seeds of that pair's differences over ``sqrt(n)``, ``n - 1``
  degrees of freedom (no equal-variance assumption, less power).

Each comparison gets a one-sided t test of "gain <= 0"; multiplicity is handled by Holm's step-down
procedure over all comparisons at level ``alpha`` (familywise: on a curve that is flat after its knee,
the chance that any comparison inside the flat part is called significant, which would push the elbow
past the knee, is at most ``alpha``). ``lower`` is each comparison's one-sided lower confidence bound at
the level Holm tests it at, so ``lower > 0`` exactly when it is significant.

The interval comes from a bootstrap over whole seeds: each resample draws ``n`` seeds (rows of ``Y``)
with replacement, keeping every seed's ranks together, and reapplies the rule with the full-data standard
errors (re-estimating the noise in a resample that repeats seeds would make it too small). Its ``level``
percentile range, with "not reached" above every rank, is the interval.

Beside the rule, :mod:`.curves` fits several curve families to the seed-centred points (each seed's
offset from the grand mean removed), with AICc weights and each curve's own elbow (the smallest rank after
which no predicted gain reaches the detectable gain of the rule's test of that comparison).

Needs scipy (``pip install 'adaptertune[report]'``), imported lazily.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from ..errors import ConfigError, DataError
from ..extras import require
from .curves import FAMILIES, CurveFit, fit_curves

__all__ = [
    "COMPARE",
    "NOISE_MODELS",
    "RULE",
    "ElbowResult",
    "PairTest",
    "fit_elbow",
    "holm",
    "pair_tests",
    "paired_table",
]

_logger = logging.getLogger(__name__)
NOISE_MODELS = ("pooled", "per-step")
COMPARE = ("later", "adjacent")
RULE = (
    "elbow = smallest swept rank r such that no rank >= r is beaten by a {what} with a paired gain "
    "(same seed) significantly above 0 (one-sided t, {noise} noise, Holm over {m} comparisons, alpha {alpha:g}); "
    "'not reached' when the largest rank still beats the one below it"
)
_WHAT = {"later": "larger swept rank", "adjacent": "the next swept rank"}


@dataclass
class PairTest:
    """The paired gain from one swept rank to a larger one, and its test."""

    lo: int
    hi: int
    gain: float  # mean over seeds of acc(hi) - acc(lo), same seed
    se: float
    df: int
    p: float  # one-sided p of "gain <= 0"
    p_holm: float  # Holm-adjusted over the comparisons of the rule
    lower: float  # one-sided lower bound at Holm's level for this test (> 0 exactly when significant)
    significant: bool
    detectable: float  # the smallest gain this test would call significant at its Holm level


def holm(p: np.ndarray) -> np.ndarray:
    """Holm-adjusted p-values along the last axis: ``max_{j<=i} min(1, (m - j + 1) p_(j))`` in sorted order."""
    p = np.asarray(p, dtype=float)
    m = p.shape[-1]
    order = np.argsort(p, axis=-1, kind="stable")
    ps = np.take_along_axis(p, order, axis=-1) * (m - np.arange(m))
    adj = np.minimum(np.maximum.accumulate(ps, axis=-1), 1.0)
    out = np.empty_like(adj)
    np.put_along_axis(out, order, adj, axis=-1)
    return out


def paired_table(
    points: Iterable[tuple[int, Any, float]], min_rank: int = 1
) -> tuple[list[int], list[Any], np.ndarray, list[Any]]:
    """Arrange ``(rank, seed, acc)`` points as a seeds x ranks table of the seeds run at every rank.

    ``min_rank`` is the smallest rank accepted (0: head only, for rules that need no log of the rank).

    Returns:
        Ranks (ascending), kept seeds, the (seeds, ranks) table and the seeds dropped for missing ranks.

    Raises:
        DataError: a rank below ``min_rank``, a non-finite accuracy, a repeated (rank, seed), fewer than 2 ranks or
            fewer than 2 seeds run at every rank.
    """
    cells: dict[tuple[int, Any], float] = {}
    for r, s, a in points:
        r, a = int(r), float(a)
        if r < min_rank or not math.isfinite(a):
            raise DataError(
                f"Elbow points need ranks >= {min_rank} and finite accuracies, got rank {r}, accuracy {a}."
            )
        if (r, s) in cells:
            raise DataError(f"Rank {r}, seed {s} appears twice; give one accuracy per (rank, seed).")
        cells[(r, s)] = a
    ranks = sorted({r for r, _ in cells})
    if len(ranks) < 2:
        raise DataError(f"The elbow needs at least 2 swept ranks, got {ranks}.")
    all_seeds = sorted({s for _, s in cells}, key=str)
    seeds = [s for s in all_seeds if all((r, s) in cells for r in ranks)]
    dropped = [s for s in all_seeds if s not in seeds]
    if len(seeds) < 2:
        raise DataError(
            f"The elbow needs >= 2 seeds run at every rank (paired gains), got {len(seeds)} of {len(all_seeds)} "
            f"seeds complete over ranks {ranks}."
        )
    return ranks, seeds, np.array([[cells[(r, s)] for r in ranks] for s in seeds]), dropped


def _pairs(k: int, compare: str) -> np.ndarray:
    """(P, 2) index pairs ``i < j`` of the comparisons: all later ranks, or the next one only."""
    if compare == "adjacent":
        return np.array([(i, i + 1) for i in range(k - 1)])
    return np.array([(i, j) for i in range(k - 1) for j in range(i + 1, k)])


def _standard_errors(y: np.ndarray, pairs: np.ndarray, noise: str) -> tuple[np.ndarray, np.ndarray, float]:
    """Per pair: standard error and degrees of freedom of the paired gain; the pooled residual sd."""
    n, k = y.shape
    resid = y - y.mean(1, keepdims=True) - y.mean(0, keepdims=True) + y.mean()  # (n, K) block-model residuals
    sigma = float(np.sqrt((resid**2).sum() / ((n - 1) * (k - 1))))
    if noise == "pooled":
        return np.full(len(pairs), sigma * math.sqrt(2.0 / n)), np.full(len(pairs), (n - 1) * (k - 1)), sigma
    d = y[:, pairs[:, 1]] - y[:, pairs[:, 0]]  # (n, P)
    return d.std(0, ddof=1) / math.sqrt(n), np.full(len(pairs), n - 1), sigma


def _holm_levels(p: np.ndarray, alpha: float) -> np.ndarray:
    """The level Holm tests each hypothesis at: alpha / (m - i) at sorted position i, frozen where it stops."""
    m = len(p)
    order = np.argsort(p, kind="stable")
    levels = alpha / (m - np.arange(m))
    stop = np.nonzero(p[order] > levels)[0]
    if len(stop):
        levels[stop[0] :] = levels[stop[0]]
    out = np.empty(m)
    out[order] = levels
    return out


def pair_tests(
    ranks: Sequence[int], y: np.ndarray, alpha: float = 0.05, noise: str = "pooled", compare: str = "later"
) -> tuple[list[PairTest], float]:
    """Paired one-sided tests of a seeds x ranks table's comparisons, Holm-adjusted.

    Returns:
        The tests (ordered by lower rank, then higher) and the pooled residual standard deviation.

    Raises:
        DataError: the paired gains do not vary over seeds (their noise cannot be measured).
    """
    stats = require("scipy.stats", "The elbow rule")

    pairs = _pairs(y.shape[1], compare)
    gains = (y[:, pairs[:, 1]] - y[:, pairs[:, 0]]).mean(0)
    se, df, sigma = _standard_errors(y, pairs, noise)
    if not np.all(se > 0):
        raise DataError(
            "The paired gains do not vary over seeds (every seed gains exactly the same), so their noise "
            "cannot be measured; check that the seeds are distinct runs."
        )
    p = stats.t.sf(gains / se, df)
    p_adj = holm(p)
    crit = stats.t.isf(_holm_levels(p, alpha), df)
    tests = [
        PairTest(
            lo=int(ranks[i]),
            hi=int(ranks[j]),
            gain=float(gains[q]),
            se=float(se[q]),
            df=int(df[q]),
            p=float(p[q]),
            p_holm=float(p_adj[q]),
            lower=float(gains[q] - crit[q] * se[q]),
            significant=bool(p_adj[q] <= alpha),
            detectable=float(crit[q] * se[q]),
        )
        for q, (i, j) in enumerate(pairs)
    ]
    return tests, sigma


def _elbow_index(pairs: np.ndarray, significant: np.ndarray, k: int) -> np.ndarray:
    """Index into the K swept ranks of the elbow (``K`` = not reached) per row of a (..., P) table.

    The elbow is the rank just above the largest rank beaten by a significant comparison (0 if none);
    when that is the largest rank itself, the elbow is not reached.
    """
    beaten = np.where(significant, pairs[:, 0] + 1, 0).max(-1)  # 1 + largest beaten lower index, 0 if none
    return np.where(beaten == k - 1, k, beaten)


@dataclass
class ElbowResult:
    """The elbow of one rank sweep: the rule's answer, its bootstrap interval, its tests and the curve fits.

    ``elbow`` and the interval's ends are swept ranks, or None for "not reached".
    """

    elbow: int | None
    interval: tuple[int | None, int | None]
    level: float
    rule: str
    alpha: float
    noise: str
    compare: str
    sigma: float  # pooled residual sd of one run (seed effects removed)
    ranks: list[int]
    seeds: list[Any]
    dropped_seeds: list[Any]
    mean_acc: list[float]
    std_acc: list[float]  # over seeds (ddof=1)
    steps: list[PairTest]  # adjacent swept ranks (a subset of ``tests``)
    tests: list[PairTest]  # every comparison the rule used
    fits: list[CurveFit]
    n_boot: int
    boot_elbows: dict[str, int]  # how often each elbow came out of the bootstrap
    points: list[tuple[int, Any, float]] = field(repr=False)

    @property
    def reached(self) -> bool:
        return self.elbow is not None

    @property
    def label(self) -> str:
        """The elbow as text: a rank or ``not reached``."""
        return _label(self.elbow)

    @property
    def interval_label(self) -> str:
        return f"[{_label(self.interval[0])}, {_label(self.interval[1])}]"

    @property
    def deciding(self) -> PairTest | None:
        """The significant comparison that sets the elbow (largest beaten rank, then largest lower bound)."""
        sig = [t for t in self.tests if t.significant]
        return max(sig, key=lambda t: (t.lo, t.lower)) if sig else None

    @property
    def best_fit(self) -> CurveFit | None:
        """The fit with the largest AICc weight, or None if none could be scored."""
        scored = [f for f in self.fits if f.weight > 0]
        return max(scored, key=lambda f: f.weight) if scored else None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.update(
            elbow=self.label,
            interval=[_label(v) for v in self.interval],
            fits=[f.to_dict() for f in self.fits],
            points=[list(p) for p in self.points],
        )
        return d


def _label(v: int | None) -> str | int:
    return "not reached" if v is None else v


def _bootstrap(
    y: np.ndarray, tests: list[PairTest], pairs: np.ndarray, alpha: float, n_boot: int, seed: int
) -> np.ndarray:
    """Elbow indices (``K`` = not reached) of ``n_boot`` resamples of whole seeds, full-data standard errors."""
    stats = require("scipy.stats", "The elbow rule")

    n, k = y.shape
    rows = np.random.default_rng(seed).integers(0, n, size=(n_boot, n))
    yb = y[rows]  # (B, n, K): whole seeds, every rank of a drawn seed kept together
    gains = (yb[:, :, pairs[:, 1]] - yb[:, :, pairs[:, 0]]).mean(1)  # (B, P)
    se = np.array([t.se for t in tests])
    df = np.array([t.df for t in tests])
    return _elbow_index(pairs, holm(stats.t.sf(gains / se, df)) <= alpha, k)


def fit_elbow(
    points: Iterable[tuple[int, Any, float]],
    alpha: float = 0.05,
    noise: str = "pooled",
    compare: str = "later",
    n_boot: int = 2000,
    level: float = 0.9,
    seed: int = 0,
    families: Sequence[str] = tuple(FAMILIES),
) -> ElbowResult:
    """The elbow of a rank sweep by the paired-seed rule, with a whole-seed bootstrap interval and curve fits.

    Args:
        points: ``(rank, seed, accuracy)`` per run; seeds not run at every rank are dropped (and listed).
            Rank 0 (head only) joins the rule's comparisons, not the curve fits (they are in log r).
        alpha: familywise level of the comparisons.
        noise: ``pooled`` or ``per-step`` standard errors (see the module docstring).
        compare: ``later`` (every larger rank) or ``adjacent`` (the next swept rank only).
        n_boot: bootstrap resamples of whole seeds (0: the interval is the point estimate).
        level: coverage of the percentile interval.
        seed: seed of the bootstrap.
        families: curve families fitted beside the rule (keys of ``curves.FAMILIES``).

    Returns:
        An :class:`ElbowResult`.

    Raises:
        DataError: fewer than 2 ranks, fewer than 2 seeds run at every rank, or gains without noise.
        ConfigError: a bad ``alpha``, ``level``, ``noise``, ``compare`` or family.

    Example:
        >>> pts = [(r, s, 70 + 2 * math.log2(min(r, 16)) + 0.5 * s + 0.3 * ((r + s) % 3))
        ...        for r in (1, 2, 4, 8, 16, 32, 64) for s in range(3)]
        >>> fit_elbow(pts).label
        16
    """
    if noise not in NOISE_MODELS:
        raise ConfigError(f"Unknown elbow noise model '{noise}'; accepted: {', '.join(NOISE_MODELS)}.")
    if compare not in COMPARE:
        raise ConfigError(f"Unknown elbow comparison '{compare}'; accepted: {', '.join(COMPARE)}.")
    if not 0 < alpha < 1 or not 0 < level < 1:
        raise ConfigError(f"alpha and level must be in (0, 1), got alpha {alpha:g}, level {level:g}.")
    unknown = [f for f in families if f not in FAMILIES]
    if unknown:
        raise ConfigError(f"Unknown curve family {unknown[0]!r}; accepted: {', '.join(FAMILIES)}.")
    pts = list(points)
    ranks, seeds, y, dropped = paired_table(pts, min_rank=0)
    if dropped:
        _logger.warning("elbow: seeds %s are not run at every rank and were left out", dropped)
    k = len(ranks)
    tests, sigma = pair_tests(ranks, y, alpha, noise, compare)
    pairs = _pairs(k, compare)

    def to_rank(i: int) -> int | None:
        return None if i >= k else int(ranks[i])

    elbow = to_rank(int(_elbow_index(pairs, np.array([t.significant for t in tests]), k)))
    if n_boot > 0:
        idx = _bootstrap(y, tests, pairs, alpha, n_boot, seed)
        q = (1 - level) / 2 * 100
        lo, hi = np.percentile(idx, q, method="lower"), np.percentile(idx, 100 - q, method="higher")
        interval = (to_rank(int(lo)), to_rank(int(hi)))
        values, counts = np.unique(idx, return_counts=True)
        boot = {str(_label(to_rank(int(v)))): int(c) for v, c in zip(values, counts)}
    else:
        interval, boot = (elbow, elbow), {}

    steps = [t for t in tests if ranks.index(t.hi) == ranks.index(t.lo) + 1]
    centred = y - y.mean(1, keepdims=True) + y.mean()  # each seed's offset removed (n - 1 nuisance parameters)
    pos = np.array(ranks) > 0  # the curves are in log r: rank 0 (head only) is left out of the fits
    fits = fit_curves(
        np.repeat([np.array(ranks)[pos]], len(seeds), axis=0).ravel(),
        centred[:, pos].ravel(),
        [(t.lo, t.hi, t.detectable) for t in tests if t.lo > 0],
        families,
        n_nuisance=len(seeds) - 1,
    )
    kept = {str(s) for s in seeds}
    return ElbowResult(
        elbow=elbow,
        interval=interval,
        level=level,
        rule=RULE.format(what=_WHAT[compare], noise=noise, m=len(tests), alpha=alpha),
        alpha=alpha,
        noise=noise,
        compare=compare,
        sigma=sigma,
        ranks=[int(r) for r in ranks],
        seeds=seeds,
        dropped_seeds=dropped,
        mean_acc=[float(v) for v in y.mean(0)],
        std_acc=[float(v) for v in y.std(0, ddof=1)],
        steps=steps,
        tests=tests,
        fits=fits,
        n_boot=n_boot,
        boot_elbows=boot,
        points=[(int(r), s, float(a)) for r, s, a in pts if str(s) in kept],
    )
