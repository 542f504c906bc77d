"""Curve families for accuracy vs adapter rank, fitted side by side with information-criterion weights (pure).

None of these is "the paper's formula" (it could not be read, see PAPER.md): they are chosen shapes that
rise with rank and may flatten, fitted to the same points so that a reader can see how much an elbow read
off a curve depends on the curve chosen.

    power         a - b r^-c                 b >= 0, 0.001 <= c <= 4
    exponential   a - b exp(-r / k)          b >= 0, k between min(r)/20 and 20 max(r)
    hinge         a + g log2(min(r, r0))     rises g points per doubling up to r0, flat after
    power_linear  a - b r^-c - e r           the power law with a linear penalty e >= 0

The power laws are fitted as ``y1 + s (1 - r^-c) / c`` (``y1 = a - b`` the accuracy at r = 1, ``s = b c``
the initial gain per e-fold of r; ``a = y1 + s / c``, ``b = s / c``): a log-linear sweep drives ``c`` to 0
and ``a, b`` to infinity, where only ``y1`` and ``s`` stay identified; in this form the limit c -> 0 is
``y1 + s ln r``, smooth and fast to fit, and ``c`` at its lower bound says "no bend".

Each fit is least squares on the points given (the caller removes seed effects first) and is scored by
AICc (AIC with the small-sample correction; Burnham & Anderson 2002, sec. 2.4) from the Gaussian
likelihood; the Akaike weight of family i is ``exp(-d_i / 2) / sum_j exp(-d_j / 2)`` with ``d_i`` its AICc
minus the smallest. A fit is *identified* when no parameter sits on a bound and every parameter's standard
error (from the curvature of the least-squares objective) is finite and smaller than the parameter; an
unidentified fit can still describe the points, but its parameters, and any elbow read from them, cannot
be trusted on their own.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from ..extras import require

__all__ = ["FAMILIES", "CurveFamily", "CurveFit", "akaike_weights", "fit_curve", "fit_curves", "predicted_elbow"]


def _log_power(r: np.ndarray, c: float) -> np.ndarray:
    """``(1 - r^-c) / c``, which tends to ``ln r`` as c -> 0 (computed without cancellation)."""
    return -np.expm1(-c * np.log(r)) / c


def _power(r: np.ndarray, y1: float, s: float, c: float) -> np.ndarray:
    return y1 + s * _log_power(r, c)


def _exponential(r: np.ndarray, a: float, b: float, k: float) -> np.ndarray:
    return a - b * np.exp(-r / k)


def _hinge(r: np.ndarray, a: float, g: float, r0: float) -> np.ndarray:
    return a + g * np.log2(np.minimum(r, r0))


def _power_linear(r: np.ndarray, y1: float, s: float, c: float, e: float) -> np.ndarray:
    return y1 + s * _log_power(r, c) - e * (r - 1)


@dataclass(frozen=True)
class CurveFamily:
    """A named curve ``fn(r, *params)`` with its bounds, given the swept ranks and the accuracies."""

    name: str
    formula: str
    params: tuple[str, ...]
    fn: Callable[..., np.ndarray]
    bounds: Callable[[np.ndarray, np.ndarray], tuple[list[float], list[float]]]
    p0: Callable[[np.ndarray, np.ndarray], list[float]]


def _span(y: np.ndarray) -> float:
    return max(float(np.ptp(y)), 1e-3)


FAMILIES: dict[str, CurveFamily] = {
    f.name: f
    for f in (
        CurveFamily(
            "power",
            "y1 + s (1 - r^-c) / c",
            ("y1", "s", "c"),
            _power,
            lambda r, y: ([-np.inf, 0.0, 1e-3], [np.inf, np.inf, 4.0]),
            lambda r, y: [float(y.min()), _span(y), 0.5],
        ),
        CurveFamily(
            "exponential",
            "a - b exp(-r/k)",
            ("a", "b", "k"),
            _exponential,
            lambda r, y: ([-np.inf, 0.0, float(r.min()) / 20], [np.inf, np.inf, 20.0 * float(r.max())]),
            lambda r, y: [float(y.max()), 1.5 * _span(y), float(np.sqrt(r.min() * r.max()))],
        ),
        CurveFamily(
            "hinge",
            "a + g log2(min(r, r0))",
            ("a", "g", "r0"),
            _hinge,
            lambda r, y: ([-np.inf, -np.inf, float(r.min())], [np.inf, np.inf, float(r.max())]),
            lambda r, y: [float(y.min()), _span(y) / max(np.log2(r.max() / r.min()), 1.0), float(r.max())],
        ),
        CurveFamily(
            "power_linear",
            "y1 + s (1 - r^-c) / c - e (r - 1)",
            ("y1", "s", "c", "e"),
            _power_linear,
            lambda r, y: ([-np.inf, 0.0, 1e-3, 0.0], [np.inf, np.inf, 4.0, np.inf]),
            lambda r, y: [float(y.min()), _span(y), 0.5, 0.0],
        ),
    )
}


@dataclass
class CurveFit:
    """One family fitted to the points: parameters, standard errors, AICc, weight and what is not identified."""

    family: str
    formula: str
    params: dict[str, float]
    se: dict[str, float]  # standard errors (inf: not determined by the points)
    rss: float
    n_obs: int
    n_params: int  # curve parameters + the noise variance + the nuisance parameters (seed effects)
    aicc: float  # inf when there are too few points for the correction
    identified: bool
    problems: list[str]  # why not identified (empty when identified)
    curve: list[float]  # predicted accuracy at each swept rank
    weight: float = 0.0  # Akaike weight among the families fitted together
    elbow: int | None = None  # predicted_elbow of this curve (None: not reached); set by the caller
    ranks: list[int] = field(default_factory=list)

    def predict(self, r: np.ndarray | float) -> np.ndarray:
        """The fitted curve at ranks ``r``."""
        return FAMILIES[self.family].fn(np.asarray(r, dtype=float), *self.params.values())

    def display_params(self) -> dict[str, float]:
        """The parameters in the formula's usual form: power laws as ``a, b, c (, e)`` of ``a - b r^-c (- e r)``."""
        p = dict(self.params)
        if "y1" in p:
            y1, s, c = p.pop("y1"), p.pop("s"), p.pop("c")
            p = {"a": y1 + s / c, "b": s / c, "c": c, **p}
        return p

    def summary(self) -> str:
        """One line: family, parameters, identification."""
        vals = " ".join(f"{k}={v:.4g}" if abs(v) < 1e4 else f"{k}={v:.3g}" for k, v in self.display_params().items())
        return f"{self.family} {vals}" + ("" if self.identified else f" (not identified: {'; '.join(self.problems)})")

    @property
    def fitted(self) -> bool:
        """False when the points could not be fitted at all (too few ranks, no convergence)."""
        return bool(np.all(np.isfinite(self.curve)))

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["elbow"] = "no fit" if not self.fitted else "not reached" if self.elbow is None else self.elbow
        return d


def _fit_hinge_profile(r: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Least squares of the hinge by profiling r0 over a fine log grid (a, g are linear given r0)."""
    best = None
    for r0 in np.geomspace(r.min(), r.max(), 241):
        x = np.column_stack([np.ones_like(r), np.log2(np.minimum(r, r0))])
        coef, *_ = np.linalg.lstsq(x, y, rcond=None)
        rss = float(((x @ coef - y) ** 2).sum())
        if best is None or rss < best[0] - 1e-12:
            best = (rss, np.array([coef[0], coef[1], r0]))
    params = best[1]
    # a and g given r0 are linear: their covariance is the usual s^2 (X^T X)^-1; r0 is located only to
    # within the gap between the swept ranks around it, so it gets no standard error of its own
    x = np.column_stack([np.ones_like(r), np.log2(np.minimum(r, params[2]))])
    dof = max(len(y) - 3, 1)
    cov = np.full((3, 3), np.inf)
    try:
        cov[:2, :2] = best[0] / dof * np.linalg.inv(x.T @ x)
    except np.linalg.LinAlgError:
        pass
    return params, cov


def _problems(fam: CurveFamily, params: np.ndarray, cov: np.ndarray, lo: list[float], hi: list[float]) -> list[str]:
    out = []
    se = np.sqrt(np.abs(np.diag(cov)))
    for i, name in enumerate(fam.params):
        v = params[i]
        at_bound = [b for b in (lo[i], hi[i]) if math.isfinite(b) and abs(v - b) <= 1e-6 * max(1.0, abs(b))]
        if at_bound:
            out.append(f"{name} at its bound {at_bound[0]:g}")
        elif fam.name == "hinge" and name == "r0":
            continue  # an interior knee: located between two swept ranks, reported without a standard error
        elif not math.isfinite(se[i]) or se[i] >= abs(v):
            out.append(f"{name} = {v:.3g} not determined (standard error {se[i]:.3g})")
    return out


def fit_curve(family: str, r: Sequence[float], y: Sequence[float], n_nuisance: int = 0) -> CurveFit:
    """Least-squares fit of one family to ``(r, y)`` points.

    Args:
        family: a key of :data:`FAMILIES`.
        r: rank of each point (repeats allowed: one point per seed and rank).
        y: accuracy of each point.
        n_nuisance: parameters removed from the points before the fit (seed effects), counted in AICc.

    Returns:
        A :class:`CurveFit`; ``weight`` and ``elbow`` are filled in by :func:`fit_curves`.

    Raises:
        KeyError: an unknown family.
    """
    curve_fit = require("scipy.optimize", "The curve fits").curve_fit

    fam = FAMILIES[family]
    r_a, y_a = np.asarray(r, dtype=float), np.asarray(y, dtype=float)
    grid = sorted(set(int(v) for v in r_a))
    lo, hi = fam.bounds(r_a, y_a)
    k = len(fam.params)
    problems: list[str] = []
    if len(grid) <= k:
        params, cov = np.full(k, np.nan), np.full((k, k), np.inf)
        problems.append(f"{len(grid)} distinct ranks cannot determine {k} parameters")
    elif fam.name == "hinge":
        params, cov = _fit_hinge_profile(r_a, y_a)
    else:
        p0 = np.clip(fam.p0(r_a, y_a), [v + 1e-9 if math.isfinite(v) else v for v in lo], hi)
        try:
            params, cov = curve_fit(fam.fn, r_a, y_a, p0=p0, bounds=(lo, hi), maxfev=5000)
        except (RuntimeError, ValueError) as err:
            params, cov = np.full(k, np.nan), np.full((k, k), np.inf)
            problems.append(f"no fit ({err})")
    if not problems:
        problems = _problems(fam, params, cov, lo, hi)
    pred = fam.fn(r_a, *params)
    rss = float(((pred - y_a) ** 2).sum()) if np.all(np.isfinite(pred)) else math.inf
    n, p = len(y_a), k + 1 + n_nuisance  # curve parameters, the noise variance, the nuisance parameters
    # a perfect fit has rss = 0: floor it so the log-likelihood stays finite
    rss_f = max(rss, 1e-12 * max(float(np.var(y_a)), 1e-12) * n)
    aicc = n * math.log(rss_f / n) + 2 * p + (2 * p * (p + 1) / (n - p - 1) if n - p - 1 > 0 else math.inf)
    if not math.isfinite(aicc) and not problems:
        problems.append(f"{n} points are too few for AICc with {p} parameters")
    se = np.sqrt(np.abs(np.diag(cov)))
    return CurveFit(
        family=fam.name,
        formula=fam.formula,
        params={name: float(v) for name, v in zip(fam.params, params)},
        se={name: float(v) if math.isfinite(v) else math.inf for name, v in zip(fam.params, se)},
        rss=rss,
        n_obs=n,
        n_params=p,
        aicc=aicc if math.isfinite(rss) else math.inf,
        identified=not problems,
        problems=problems,
        curve=[float(v) for v in fam.fn(np.array(grid, dtype=float), *params)],
        ranks=grid,
    )


def akaike_weights(aicc: Sequence[float]) -> list[float]:
    """``exp(-d_i / 2) / sum_j exp(-d_j / 2)``, ``d_i = aicc_i - min(aicc)``; an infinite AICc gets weight 0."""
    vals = np.asarray(aicc, dtype=float)
    if not np.any(np.isfinite(vals)):
        return [0.0] * len(vals)
    d = vals - vals[np.isfinite(vals)].min()
    w = np.where(np.isfinite(d), np.exp(-0.5 * np.where(np.isfinite(d), d, 0.0)), 0.0)
    return [float(v) for v in w / w.sum()]


def predicted_elbow(
    ranks: Sequence[int], curve: Sequence[float], comparisons: Sequence[tuple[int, int, float]]
) -> int | None:
    """The elbow rule applied to a fitted curve instead of the data.

    Args:
        ranks: swept ranks, ascending.
        curve: predicted accuracy at each swept rank.
        comparisons: ``(lower rank, higher rank, threshold)``: a comparison counts when the predicted gain
            reaches its threshold (the rule's detectable gain for it).

    Returns:
        The swept rank just above the largest rank beaten by a counted comparison (the smallest rank if
        none); None (not reached) when that is the largest rank.
    """
    pred = dict(zip((int(r) for r in ranks), (float(v) for v in curve)))
    if not all(math.isfinite(v) for v in pred.values()):
        return None
    beaten = [ranks.index(lo) for lo, hi, thr in comparisons if pred[hi] - pred[lo] >= thr]
    if not beaten:
        return int(ranks[0])
    top = max(beaten) + 1
    return None if top == len(ranks) - 1 else int(ranks[top])


def fit_curves(
    r: Sequence[float],
    y: Sequence[float],
    comparisons: Sequence[tuple[int, int, float]],
    families: Sequence[str] = tuple(FAMILIES),
    n_nuisance: int = 0,
) -> list[CurveFit]:
    """Fit every family to the same points, weight them by AICc and read each curve's elbow.

    Args:
        r: rank of each point.
        y: accuracy of each point (seed effects removed).
        comparisons: ``(lower rank, higher rank, threshold)`` of the elbow rule, for each curve's elbow
            (:func:`predicted_elbow`).
        families: which of :data:`FAMILIES`.
        n_nuisance: see :func:`fit_curve`.

    Returns:
        One :class:`CurveFit` per family, in the order given.
    """
    fits = [fit_curve(f, r, y, n_nuisance) for f in families]
    for fit, w in zip(fits, akaike_weights([f.aicc for f in fits])):
        fit.weight = w
        fit.elbow = predicted_elbow(fit.ranks, fit.curve, comparisons) if fit.fitted else None
    return fits
