"""The rank elbow: fit the diminishing-returns curve of accuracy vs adapter rank (pure).

The paper (arXiv 2603.14706) treats rank as a capacity budget and derives an excess-risk decomposition,
an approximation term falling with r plus an estimation term growing with r, which predicts monotonic
but diminishing gains with rank. Its exact formula could not be read; the curve fitted here is a
*reconstruction of the predicted shape* (see PAPER.md, "Theory"), one term per part of the decomposition:

    acc(r) = a - b * r^(-c) - e * r          b >= 0, c > 0, e >= 0

``b r^-c``: the approximation error, falling with r (the task shift's energy outside its best rank-r part,
for a power-law spectrum); ``e r``: the estimation error, growing with the adapter's parameter count at a
fixed training-set size. With ``e = 0`` it is the plain power law ``a - b r^-c``. On short CPU protocols
accuracy rises by a near-constant step per doubling and then flattens: only the ``e r`` term can bend a
curve that is log-linear at small r (c -> 0), so without it such sweeps never show an elbow.

Elbow rule (stated once, used everywhere): the elbow is the smallest rank ``r`` of the swept grid at
which one more doubling is predicted to gain less than the seed-to-seed noise,

    gain(r) = acc(2r) - acc(r) = b * r^(-c) * (1 - 2^(-c)) - e * r < noise,

where ``noise`` is the standard error of a per-rank mean: the pooled within-rank standard deviation
across seeds divided by sqrt(seeds per rank). If no swept rank qualifies, the elbow is the largest
swept rank and ``reached`` is False. The interval comes from a seeded bootstrap over seeds: seeds are
resampled with replacement within each rank, the curve is refitted and the elbow recomputed; the
interval holds the ``level`` percentile range of those elbows (grid values).

Needs scipy (``pip install 'adaptertune[report]'``), imported lazily.
"""

from __future__ import annotations

import logging
import math
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import DataError

__all__ = ["ElbowFit", "ElbowRow", "elbow_rank", "elbow_table", "fit_elbow", "plot_elbow", "power_law"]

_logger = logging.getLogger(__name__)
_CONTINUOUS_CAP = 2.0**30  # elbow_continuous of a near log-linear fit (c -> 0) is astronomically large


def power_law(r: np.ndarray, a: float, b: float, c: float, e: float = 0.0) -> np.ndarray:
    """``a - b * r^(-c) - e * r``: accuracy at rank r (``e = 0``: the plain power law)."""
    r = np.asarray(r, dtype=float)
    return a - b * np.power(r, -c) - e * r


def doubling_gain(r: np.ndarray | float, b: float, c: float, e: float = 0.0) -> np.ndarray:
    """Predicted gain of doubling the rank: ``acc(2r) - acc(r) = b r^-c (1 - 2^-c) - e r``."""
    r = np.asarray(r, dtype=float)
    return b * np.power(r, -c) * (1.0 - 2.0 ** (-c)) - e * r


def elbow_rank(ranks: Iterable[int], b: float, c: float, noise: float, e: float = 0.0) -> tuple[int, bool]:
    """Smallest rank of ``ranks`` whose doubling gain is below ``noise``; (largest rank, False) if none."""
    grid = sorted(set(int(r) for r in ranks))
    gains = doubling_gain(np.array(grid), b, c, e)
    for r, g in zip(grid, gains):
        if g < noise:
            return r, True
    return grid[-1], False


@dataclass
class ElbowFit:
    """A fitted accuracy-vs-rank curve with its elbow.

    Accuracies are in the units given (top-1 %, in the run summaries).
    """

    ranks: list[int]  # swept grid, ascending
    mean_acc: list[float]  # per rank, over seeds
    std_acc: list[float]  # per rank, over seeds (ddof=1; 0 for one seed)
    n_seeds: list[int]
    points: list[tuple[int, float]]  # every (rank, accuracy) fitted
    params: dict[str, float]  # a, b, c, e of a - b r^-c - e r
    noise: float  # std error of a per-rank mean (pooled over ranks)
    threshold: float  # max(noise, min_gain): the gain a doubling must beat
    elbow: int
    reached: bool  # False: every swept doubling still gains more than the noise
    interval: tuple[int, int]  # bootstrap percentile interval of the elbow (grid values)
    level: float
    n_boot: int
    n_boot_failed: int
    elbow_continuous: float  # r where gain(r) = threshold, not restricted to the grid (capped at 2^30)
    top_gain: float  # predicted gain of doubling the largest swept rank (compare with ``threshold``)
    curve_r: list[float] = field(repr=False)
    curve_acc: list[float] = field(repr=False)
    rule: str = "smallest swept r with acc(2r) - acc(r) < std error of a per-rank mean over seeds"

    @property
    def log_linear(self) -> bool:
        """The fitted gain per doubling shrinks by less than 20% across the grid: accuracy rises by a nearly
        constant step per doubling, no bend in sight."""
        p = self.params
        g0, g1 = doubling_gain(np.array([self.ranks[0], self.ranks[-1]]), p["b"], p["c"], p.get("e", 0.0))
        return bool(g0 > 0 and g1 >= 0.8 * g0)

    def to_dict(self) -> dict[str, Any]:
        from dataclasses import asdict

        return asdict(self)


def _fit_params(r: np.ndarray, y: np.ndarray) -> tuple[float, float, float, float]:
    from scipy.optimize import curve_fit

    means = {k: float(y[r == k].mean()) for k in np.unique(r)}
    lo, hi = means[min(means)], max(means.values())
    p0 = (hi + 0.1 * abs(hi - lo) + 1e-3, max(hi - lo, 1e-3), 0.7, 0.0)
    # c in (0, 4]: beyond 4 the curve is a step and b, c stop being identifiable; e >= 0
    bounds = ([-np.inf, 0.0, 1e-3, 0.0], [np.inf, np.inf, 4.0, np.inf])
    params, _ = curve_fit(power_law, r.astype(float), y.astype(float), p0=p0, bounds=bounds, maxfev=20000)
    return float(params[0]), float(params[1]), float(params[2]), float(params[3])


def _noise(groups: Mapping[int, np.ndarray]) -> float:
    """Pooled within-rank std over seeds, divided by sqrt(median seeds per rank)."""
    dof = sum(len(v) - 1 for v in groups.values())
    if dof == 0:
        raise DataError("The elbow needs at least two seeds at one rank to measure seed-to-seed noise.")
    pooled = math.sqrt(sum(((v - v.mean()) ** 2).sum() for v in groups.values()) / dof)
    return pooled / math.sqrt(float(np.median([len(v) for v in groups.values()])))


def fit_elbow(
    points: Iterable[tuple[int, float]],
    n_boot: int = 500,
    level: float = 0.9,
    seed: int = 0,
    min_gain: float = 0.0,
) -> ElbowFit:
    """Fit ``acc(r) = a - b r^-c - e r`` to per-seed accuracies and find the elbow with a bootstrap interval.

    Args:
        points: ``(rank, accuracy)`` pairs, one per seed and rank.
        n_boot: bootstrap resamples (0: no interval, the interval is the point estimate).
        level: coverage of the percentile interval.
        seed: seed of the bootstrap.
        min_gain: a floor on the noise threshold (same units as the accuracies).

    Returns:
        An :class:`ElbowFit`.

    Raises:
        DataError: fewer than 3 distinct ranks, no rank with two seeds, or the curve cannot be fitted.

    Example:
        >>> fit = fit_elbow([(1, 80.1), (1, 79.5), (4, 86.0), (4, 86.4), (16, 88.2), (16, 87.9)])
        >>> fit.elbow, fit.interval
    """
    pts = [(int(r), float(a)) for r, a in points]
    if any(r < 1 or not math.isfinite(a) for r, a in pts):
        raise DataError("Elbow points need ranks >= 1 and finite accuracies.")
    groups_l: dict[int, list[float]] = defaultdict(list)
    for r, a in pts:
        groups_l[r].append(a)
    if len(groups_l) < 3:
        raise DataError(f"The elbow fit needs at least 3 distinct ranks, got {sorted(groups_l)}.")
    groups = {r: np.array(v) for r, v in sorted(groups_l.items())}
    grid = list(groups)
    r_all = np.array([r for r, v in groups.items() for _ in v])
    y_all = np.concatenate(list(groups.values()))
    noise = _noise(groups)
    threshold = max(noise, min_gain)
    try:
        a, b, c, e = _fit_params(r_all, y_all)
    except (RuntimeError, ValueError) as err:
        raise DataError(f"Cannot fit acc(r) = a - b r^-c - e r to ranks {grid}: {err}") from None
    elbow, reached = elbow_rank(grid, b, c, threshold, e)

    rng = np.random.default_rng(seed)
    boots, failed = [], 0
    for _ in range(n_boot):
        res = {r: v[rng.integers(0, len(v), len(v))] for r, v in groups.items()}
        rb = np.array([r for r, v in res.items() for _ in v])
        yb = np.concatenate(list(res.values()))
        try:
            _, bb, cb, eb = _fit_params(rb, yb)
            nb = max(_noise(res), min_gain) if any(len(v) > 1 for v in res.values()) else threshold
        except (RuntimeError, ValueError, DataError):
            failed += 1
            continue
        if nb <= 0:  # a resample whose seeds all coincide: keep the full-data threshold
            nb = threshold
        boots.append(elbow_rank(grid, bb, cb, nb, eb)[0])
    if failed:
        _logger.info("elbow bootstrap: %d of %d refits failed and were left out", failed, n_boot)
    if boots:
        q = (1 - level) / 2 * 100
        interval = (int(np.percentile(boots, q, method="lower")), int(np.percentile(boots, 100 - q, method="higher")))
    else:
        interval = (elbow, elbow)

    # the first r (dense log grid from 1 to the cap) where the predicted doubling gain drops below the threshold
    dense = np.geomspace(1.0, _CONTINUOUS_CAP, 3001)
    below = np.nonzero(doubling_gain(dense, b, c, e) < threshold)[0]
    cont = float(dense[below[0]]) if len(below) else _CONTINUOUS_CAP
    curve_r = np.geomspace(grid[0], grid[-1], 64)
    return ElbowFit(
        ranks=grid,
        mean_acc=[float(v.mean()) for v in groups.values()],
        std_acc=[float(v.std(ddof=1)) if len(v) > 1 else 0.0 for v in groups.values()],
        n_seeds=[len(v) for v in groups.values()],
        points=[(int(r), float(y)) for r, y in zip(r_all, y_all)],
        params={"a": a, "b": b, "c": c, "e": e},
        noise=noise,
        threshold=threshold,
        elbow=elbow,
        reached=reached,
        interval=interval,
        level=level,
        n_boot=n_boot,
        n_boot_failed=failed,
        elbow_continuous=cont,
        top_gain=float(doubling_gain(grid[-1], b, c, e)),
        curve_r=[float(x) for x in curve_r],
        curve_acc=[float(x) for x in power_law(curve_r, a, b, c, e)],
    )


@dataclass
class ElbowRow:
    """One (dataset, backbone) cell: its fit, or why there is none."""

    dataset: str
    backbone: str
    method: str
    fit: ElbowFit | None
    reason: str | None = None


def elbow_table(
    rows: Iterable[Mapping[str, Any]], method: str = "adapter", n_boot: int = 500, seed: int = 0
) -> list[ElbowRow]:
    """Fit the elbow of every (dataset, backbone) pair in a sweep's report rows.

    Args:
        rows: dicts with ``dataset, backbone, method, rank, seed, test_acc`` (other keys are ignored).
            Rows of another method, or without a rank or an accuracy, are skipped. A repeated
            (rank, seed) keeps its last row.
        method: the rank-swept method.
        n_boot: bootstrap resamples per pair.
        seed: bootstrap seed.

    Returns:
        One :class:`ElbowRow` per pair, sorted by (dataset, backbone); ``fit`` is None with a
        ``reason`` when the pair cannot be fitted (too few ranks or seeds).
    """
    cells: dict[tuple[str, str], dict[tuple[int, Any], float]] = defaultdict(dict)
    for row in rows:
        if row.get("method") != method or row.get("rank") is None or row.get("test_acc") is None:
            continue
        cells[(str(row["dataset"]), str(row["backbone"]))][(int(row["rank"]), row.get("seed"))] = float(
            row["test_acc"]
        )
    out = []
    for (dataset, backbone), accs in sorted(cells.items()):
        pts = [(r, a) for (r, _), a in sorted(accs.items(), key=lambda kv: (kv[0][0], str(kv[0][1])))]
        try:
            out.append(ElbowRow(dataset, backbone, method, fit_elbow(pts, n_boot=n_boot, seed=seed)))
        except DataError as e:
            out.append(ElbowRow(dataset, backbone, method, None, str(e)))
    return out


def plot_elbow(ax: Any, fit: ElbowFit, label: str | None = None, color: str | None = None) -> None:
    """Draw seeds, mean +- std, the fitted curve and the elbow with its interval on a matplotlib Axes."""
    r_pts, a_pts = zip(*fit.points)
    line = ax.plot(fit.curve_r, fit.curve_acc, "-", color=color, label=label or "fit a - b r^-c - e r")[0]
    color = line.get_color()
    ax.scatter(r_pts, a_pts, s=12, alpha=0.5, color=color)
    ax.errorbar(fit.ranks, fit.mean_acc, yerr=fit.std_acc, fmt="o", color=color, capsize=3, ms=4)
    lo, hi = fit.interval
    ax.axvspan(lo / 1.08, hi * 1.08, color=color, alpha=0.12)
    ax.axvline(fit.elbow, color=color, ls="--", lw=1)
    ax.annotate(
        f"elbow r={fit.elbow} [{lo}, {hi}]"
        + ("" if fit.reached else " (not reached, log-linear)" if fit.log_linear else " (not reached)"),
        (fit.elbow, min(fit.mean_acc)),
        textcoords="offset points",
        xytext=(4, 4),
        fontsize=8,
        color=color,
    )
    ax.set_xscale("log", base=2)
    ax.set_xticks(fit.ranks)
    ax.set_xticklabels([str(r) for r in fit.ranks])
    ax.set_xlabel("adapter rank r")
    ax.set_ylabel("test top-1 (%)")
