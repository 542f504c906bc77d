"""Elbows of many rank sweeps at once: from report rows or any CSV with rank, seed and accuracy columns (pure).

Shared by ``adaptertune elbow`` and ``adaptertune report``: rows are grouped (by default on the columns of
the product's results.csv that exist: dataset, backbone, method, the variant without its rank, setup_id),
and each group gets the elbow by the chosen rule, or the reason it cannot (one seed per rank: "needs >= 2
seeds"). Rules: ``effect`` (default, :func:`.elbow_effect.fit_effect_elbow`: the smallest rank shown within
``delta`` points of the best) or ``paired`` (:func:`.elbow.fit_elbow`: paired significance of the gains).
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ConfigError, DataError
from .elbow import ElbowResult, fit_elbow
from .elbow_effect import DEFAULT_DELTA, RULES, EffectElbow, fit_effect_elbow

__all__ = [
    "DEFAULT_GROUP_BY",
    "ElbowRow",
    "elbow_markdown",
    "elbow_rows",
    "is_nested_rank_zero",
    "plot_elbow",
    "read_rows",
]

DEFAULT_GROUP_BY = ("dataset", "backbone", "method", "variant", "setup_id")
NEEDS_SEEDS = "needs >= 2 seeds"


@dataclass
class ElbowRow:
    """One group of a table: its key values and its elbow, or why there is none."""

    group: dict[str, str]
    result: ElbowResult | EffectElbow | None
    reason: str | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"group": self.group}
        if self.result is None:
            return {**out, "elbow": None, "reason": self.reason}
        return {**out, **self.result.to_dict()}


def read_rows(path: str | Path) -> list[dict[str, str]]:
    """The rows of a CSV file as dicts (header = keys).

    Raises:
        DataError: the file is missing or has no header.
    """
    p = Path(path)
    if not p.is_file():
        raise DataError(f"No CSV file '{p}'.")
    with p.open(newline="") as f:
        reader = csv.DictReader(f)
        if not reader.fieldnames:
            raise DataError(f"'{p}' has no header row; expected columns rank, seed and an accuracy column.")
        return list(reader)


def _variant_family(v: str) -> str:
    """The variant with its rank token removed (``adapter r=16 init=small`` -> ``adapter init=small``)."""
    return " ".join(p for p in str(v).split() if not p.startswith("r="))


def _number(v: Any) -> float | None:
    if v is None or (isinstance(v, str) and not v.strip()):
        return None
    try:
        x = float(v)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def is_nested_rank_zero(row: Mapping[str, Any]) -> bool:
    """A nested run's rank-0 row (``rank_curve.csv``): its adapters switched off in front of a head trained with
    them, not a head-only run (measured far below one), so no elbow reads it as rank 0."""
    return str(row.get("nested", "")).strip() in ("1", "True", "true") and _number(row.get("rank")) == 0


def elbow_rows(
    rows: Iterable[Mapping[str, Any]],
    group_by: Sequence[str] | None = None,
    acc_col: str | None = None,
    rule: str = "effect",
    delta: float = DEFAULT_DELTA,
    **fit_kwargs: Any,
) -> list[ElbowRow]:
    """The elbow of every group of rank-sweep rows.

    Args:
        rows: dicts with ``rank``, ``seed`` and an accuracy column (and optional grouping columns). Rows
            whose ``status`` is present and not ``success``, or without a rank or an accuracy, are skipped (rank
            0, head only, joins both rules; a nested run's rank 0 is not head only and is skipped too,
            :func:`is_nested_rank_zero`).
        group_by: columns that define a sweep; None: those of :data:`DEFAULT_GROUP_BY` present in the rows
            (``variant`` grouped without its rank).
        acc_col: the accuracy column; None: ``test_acc`` if present, else ``acc``.
        rule: ``effect`` (the effect-size rule) or ``paired`` (the paired-significance rule).
        delta: the effect-size rule's margin in accuracy points (``effect`` only).
        **fit_kwargs: passed to :func:`.elbow_effect.fit_effect_elbow` (``alpha``, ``noise``) or
            :func:`.elbow.fit_elbow`.

    Returns:
        One :class:`ElbowRow` per group, sorted by group values.

    Raises:
        DataError: a required or grouping column is missing, or no row has a rank and an accuracy.
        ConfigError: an unknown rule, or a bad rule option (``delta``, ``alpha``, ``noise``, ...).
    """
    if rule not in RULES:
        raise ConfigError(f"Unknown elbow rule '{rule}'; accepted: {', '.join(RULES)}.")
    rows = list(rows)
    cols = list(rows[0]) if rows else []
    if acc_col is None:
        acc_col = "test_acc" if "test_acc" in cols else "acc"
    missing = [c for c in ("rank", "seed", acc_col) if c not in cols]
    if missing:
        raise DataError(
            f"Rank-sweep rows need columns rank, seed and {acc_col}; missing {', '.join(missing)} "
            f"(columns: {', '.join(cols) or 'none'})."
        )
    keys = [c for c in DEFAULT_GROUP_BY if c in cols] if group_by is None else list(group_by)
    bad = [c for c in keys if c not in cols]
    if bad:
        raise DataError(f"No column {bad[0]!r} to group by; columns: {', '.join(cols)}.")
    groups: dict[tuple[str, ...], list[tuple[int, str, float]]] = {}
    for row in rows:
        rank, acc = _number(row.get("rank")), _number(row.get(acc_col))
        if row.get("status") not in (None, "", "success") or rank is None or acc is None or is_nested_rank_zero(row):
            continue
        key = tuple(_variant_family(row[c]) if c == "variant" else str(row[c]) for c in keys)
        groups.setdefault(key, []).append((int(rank), str(row["seed"]), acc))
    if not groups:
        raise DataError(f"No row has both a rank and a {acc_col} value.")
    out = []
    for key, pts in sorted(groups.items()):
        group = dict(zip(keys, key))
        try:
            res = fit_effect_elbow(pts, delta, **fit_kwargs) if rule == "effect" else fit_elbow(pts, **fit_kwargs)
            out.append(ElbowRow(group, res))
        except DataError as e:
            reason = f"{NEEDS_SEEDS}: {e}" if "2 seeds" in str(e) else str(e)
            out.append(ElbowRow(group, None, reason))
    return out


def _fits_text(res: ElbowResult) -> str:
    parts = []
    for f in sorted(res.fits, key=lambda f: -f.weight):
        elbow = f.to_dict()["elbow"]
        flag = "" if f.identified else " (not identified)"
        parts.append(f"{f.family} {f.weight:.2f}: {elbow}{flag}")
    return "; ".join(parts)


def _effect_markdown(table: Sequence[ElbowRow], keys: list[str], res0: EffectElbow) -> str:
    conf = f"{(1 - res0.alpha) * 100:g}%"
    lines = [
        f"Rule: {res0.rule}. Bound: the one-sided {conf} lower bound behind the verdict (acc(elbow) - acc(best); "
        "for 'not reached', acc(largest) - acc(best smaller rank)).",
        "",
        "| " + " | ".join([*keys, "ranks", "elbow", "bound", "seeds", "best mean", "shown within delta"]) + " |",
        "|" + "---|" * (len(keys) + 6),
    ]
    for t in table:
        vals = [t.group[k] for k in keys]
        if not isinstance(t.result, EffectElbow):
            lines.append("| " + " | ".join([*vals, "", t.reason or "", "", "", "", ""]) + " |")
            continue
        r = t.result
        shown = ",".join(str(k) for k, ok in zip(r.ranks, r.shown) if ok) or "none"
        best = f"{r.best} ({r.mean_acc[r.ranks.index(r.best)]:.2f})"
        cells = [",".join(map(str, r.ranks)), str(r.label), r.interval_label, str(len(r.seeds)), best, shown]
        lines.append("| " + " | ".join([*vals, *cells]) + " |")
    return "\n".join(lines)


def elbow_markdown(table: Sequence[ElbowRow]) -> str:
    """A markdown table of one rule's elbows: the rule, then per group its ranks, seeds, elbow and bound.

    Effect-size rule: the bound behind the verdict, the best-mean rank and the ranks shown within delta.
    Paired rule: the bootstrap interval, the largest step's gain and the curve fits with their weights.
    """
    keys = list(table[0].group) if table else []
    res0 = next((t.result for t in table if t.result is not None), None)
    if isinstance(res0, EffectElbow):
        return _effect_markdown(table, keys, res0)
    lines = [
        f"Rule: {res0.rule}. Interval: {res0.level:.0%} bootstrap over whole seeds." if res0 else "",
        "Fits: AICc weight and the curve's own elbow (its predicted step gains below the rule's detectable "
        "gain); 'not identified': a parameter on a bound or not determined by the points.",
        "",
        "| "
        + " | ".join([*keys, "ranks", "elbow", "interval", "seeds", "last step gain [lower]", "best fit", "fits"])
        + " |",
        "|" + "---|" * (len(keys) + 7),
    ]
    for t in table:
        vals = [t.group[k] for k in keys]
        if t.result is None:
            lines.append("| " + " | ".join([*vals, "", t.reason or "", "", "", "", "", ""]) + " |")
            continue
        r, last = t.result, t.result.steps[-1]
        lines.append(
            "| "
            + " | ".join(
                [
                    *vals,
                    ",".join(map(str, r.ranks)),
                    str(r.label),
                    r.interval_label,
                    str(len(r.seeds)),
                    f"{last.gain:+.2f} [{last.lower:+.2f}]",
                    r.best_fit.summary() if r.best_fit else "",
                    _fits_text(r),
                ]
            )
            + " |"
        )
    return "\n".join(lines)


def _plot_effect(ax: Any, res: EffectElbow, label: str | None, color: str | None) -> None:
    """Seeds, mean +- std, the line ``delta`` below the best mean and the elbow with its bound."""
    ax.scatter([p[0] for p in res.points], [p[2] for p in res.points], s=12, alpha=0.5, color=color)
    eb = ax.errorbar(res.ranks, res.mean_acc, yerr=res.std_acc, fmt="o-", color=color, capsize=3, ms=4, label=label)
    color = eb[0].get_color()
    ax.axhline(max(res.mean_acc) - res.delta, color=color, ls=":", lw=1)
    _mark_elbow(ax, res, color, f"elbow {res.label} (delta {res.delta:g}): {res.interval_label}")


def plot_elbow(ax: Any, res: ElbowResult | EffectElbow, label: str | None = None, color: str | None = None) -> None:
    """Seeds, mean +- std and the elbow on a matplotlib Axes: with its bound and the line ``delta`` below the
    best (effect-size rule), or with its bootstrap interval and the highest-weight fitted curve (paired rule).

    A rank axis with rank 0 (head only) is linear below 1, log2 above.
    """
    if isinstance(res, EffectElbow):
        _plot_effect(ax, res, label, color)
    else:
        _plot_paired(ax, res, label, color)
    if 0 in res.ranks:
        ax.set_xscale("symlog", base=2, linthresh=1)
    else:
        ax.set_xscale("log", base=2)
    ax.set_xticks(res.ranks)
    ax.set_xticklabels([str(r) for r in res.ranks])
    ax.set_xlabel("adapter rank r")
    ax.set_ylabel("test top-1 (%)")


def _plot_paired(ax: Any, res: ElbowResult, label: str | None, color: str | None) -> None:
    import numpy as np

    r_pts = [p[0] for p in res.points]
    a_pts = [p[2] for p in res.points]
    best = res.best_fit
    if best is not None:
        dense = np.geomspace(min(r for r in res.ranks if r > 0), res.ranks[-1], 64)
        line = ax.plot(dense, best.predict(dense), "-", color=color, label=label or f"{best.family} ({best.formula})")
        color = line[0].get_color()
    ax.scatter(r_pts, a_pts, s=12, alpha=0.5, color=color)
    eb = ax.errorbar(res.ranks, res.mean_acc, yerr=res.std_acc, fmt="o", color=color, capsize=3, ms=4)
    color = eb[0].get_color()
    lo, hi = (res.ranks[-1] * 2 if v is None else v for v in res.interval)
    ax.axvspan(lo / 1.08, hi * 1.08, color=color, alpha=0.12)
    _mark_elbow(ax, res, color, f"elbow {res.label} {res.interval_label}")


def _mark_elbow(ax: Any, res: ElbowResult | EffectElbow, color: Any, text: str) -> None:
    """The elbow's vertical line (at the largest rank when not reached) and its label."""
    x = res.elbow if res.reached else res.ranks[-1]
    ax.axvline(x, color=color, ls="--", lw=1)
    ax.annotate(text, (x, min(res.mean_acc)), textcoords="offset points", xytext=(4, 4), fontsize=8, color=color)
