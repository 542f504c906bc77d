"""Budget curves: validation accuracy against optimizer steps and training seconds, per cell, and the ranking of
the cells at a few budgets.

A run's curve comes from its ``metrics.jsonl`` epoch records (``epoch``, ``step``: optimizer steps so far,
``epoch_seconds``: the epoch's training time, ``val_acc``); its seconds are the running sum of ``epoch_seconds``
(training only: validation is not timed in it). These are validation curves: the test split is evaluated only
at each run's selected (best-validation) epoch.

- A cell's mean curve is the mean over its seeds at each epoch while every seed still runs; the seeds that ran
  longer are drawn on their own beyond it, with a marker where each run stopped and where it was selected.
- The accuracy of a run at a budget of ``b`` steps is the best validation accuracy it reached within ``b``
  steps: the epoch best-validation selection would have tested had training ended there (a run that stopped
  earlier keeps its selection). Its learning-rate schedule still spanned the whole run, so this reads a cut
  curve, not a run trained for ``b`` steps.
- The ranking at a budget orders the cells of a (dataset, backbone) pair by the mean of that accuracy over
  their seeds (1 = best; equal means share a rank); a cell with a seed that had not finished one epoch by then
  is not ranked.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .collect import Cell, RunRecord, pair_label
from .plots import _axes, _chance_line, _plt, _save
from .tables import sorted_variants

__all__ = [
    "BUDGET_FRACTIONS",
    "BUDGET_RULE",
    "BudgetRank",
    "RunCurve",
    "accuracy_at",
    "budget_curves",
    "budget_rows",
    "mean_curve",
    "plot_budget",
    "ranks_at_budgets",
    "ranks_markdown",
    "run_curve",
]

BUDGET_FRACTIONS = (0.25, 0.5, 1.0)
BUDGET_RULE = (
    "These are validation curves: the test split is evaluated only at each run's selected (best-validation) "
    "epoch. A run's accuracy at a budget of b steps is the best validation accuracy it reached within b steps "
    "(what best-validation selection would have kept had training ended there; its learning-rate schedule still "
    "spanned the whole run); a cell's value is the mean over its seeds, and a cell with a seed that had not "
    "finished one epoch by then is not ranked (-). Budgets are shares of the median over cells of each cell's "
    "longest run (so a long, cheap cell such as a cached probe does not stretch them); a cell past its own end "
    "keeps its final value."
)
_NEEDED = ("epoch", "step", "epoch_seconds", "val_acc")


@dataclass(frozen=True)
class RunCurve:
    """One run's validation curve, one entry per epoch record."""

    seed: str  # the replicate (pair_label: seed, or seed/fold)
    epochs: tuple[int, ...]
    steps: tuple[int, ...]  # optimizer steps at the end of each epoch
    seconds: tuple[float, ...]  # cumulative training seconds (running sum of epoch_seconds)
    val_acc: tuple[float, ...]
    best_epoch: int | None  # the selected epoch (summary.json)
    stopped_early: bool  # early stopping ended the run (else it ran to its epoch cap)

    def x(self, axis: str) -> tuple[float, ...]:
        """The x values of ``axis`` (``steps`` or ``seconds``)."""
        return self.steps if axis == "steps" else self.seconds


def run_curve(run: RunRecord) -> RunCurve | None:
    """The validation curve of ``run``; None unless every epoch record has epoch, step, epoch_seconds and
    val_acc (a run without a validation split, or written before they were recorded)."""
    history = sorted(run.history, key=lambda m: m.get("epoch", 0))
    if not history or any(k not in m for m in history for k in _NEEDED):
        return None
    seconds = tuple(float(s) for s in _cumsum([float(m["epoch_seconds"]) for m in history]))
    return RunCurve(
        pair_label(run.pair),
        tuple(int(m["epoch"]) for m in history),
        tuple(int(m["step"]) for m in history),
        seconds,
        tuple(float(m["val_acc"]) for m in history),
        run.best_epoch,
        run.stopped_epoch is not None,
    )


def _cumsum(values: list[float]) -> list[float]:
    out, total = [], 0.0
    for v in values:
        total += v
        out.append(total)
    return out


def budget_curves(cells: list[Cell]) -> dict[tuple[str, str], dict[str, list[RunCurve]]]:
    """Per (dataset, backbone) pair, per variant (in table order), the curves of its runs; a cell is left out
    unless every one of its runs has a curve (:func:`run_curve`)."""
    out: dict[tuple[str, str], dict[str, list[RunCurve]]] = {}
    for pair in sorted({(c.dataset, c.backbone) for c in cells}):
        mine = [c for c in cells if (c.dataset, c.backbone) == pair]
        for v in sorted_variants(mine):
            cell = next(c for c in mine if c.variant == v)
            curves = [run_curve(r) for r in cell.runs]
            if curves and all(c is not None for c in curves):
                out.setdefault(pair, {})[v] = [c for c in curves if c is not None]
    return out


def budget_rows(curves: dict[tuple[str, str], dict[str, list[RunCurve]]]) -> list[dict[str, Any]]:
    """``budget.csv``: one row per (run, epoch): dataset, backbone, cell, seed, epoch, step, seconds, val_acc."""
    return [
        {
            "dataset": d,
            "backbone": b,
            "cell": v,
            "seed": c.seed,
            "epoch": e,
            "step": s,
            "seconds": f"{t:.4f}",
            "val_acc": f"{a:.4f}",
        }
        for (d, b), by_variant in curves.items()
        for v, runs in by_variant.items()
        for c in runs
        for e, s, t, a in zip(c.epochs, c.steps, c.seconds, c.val_acc)
    ]


def mean_curve(curves: list[RunCurve], axis: str) -> tuple[list[float], list[float]]:
    """Mean x (``steps`` or ``seconds``) and mean validation accuracy over the runs at each epoch position while
    every run still runs (as many points as the shortest run has)."""
    n = min(len(c.epochs) for c in curves)
    xs = [sum(c.x(axis)[i] for c in curves) / len(curves) for i in range(n)]
    accs = [sum(c.val_acc[i] for c in curves) / len(curves) for i in range(n)]
    return xs, accs


def accuracy_at(curve: RunCurve, steps: float) -> float | None:
    """The best validation accuracy ``curve`` reached within ``steps`` optimizer steps (None: its first epoch
    ended later)."""
    seen = [a for s, a in zip(curve.steps, curve.val_acc) if s <= steps + 1e-9]
    return max(seen) if seen else None


@dataclass(frozen=True)
class BudgetRank:
    """One cell's mean validation accuracy and rank at each budget of its pair."""

    dataset: str
    backbone: str
    variant: str
    budgets: tuple[float, ...]  # steps
    accs: tuple[float | None, ...]  # mean over seeds (None: not ranked)
    ranks: tuple[int | None, ...]


def ranks_at_budgets(
    curves: dict[tuple[str, str], dict[str, list[RunCurve]]], fractions: tuple[float, ...] = BUDGET_FRACTIONS
) -> list[BudgetRank]:
    """The rank of each cell by mean validation accuracy at ``fractions`` of the median over cells of each cell's
    longest run (in steps) of its pair; see the module docstring."""
    out = []
    for (d, b), by_variant in curves.items():
        # the median cell's longest run: one long cheap cell (a cached probe's 100 epochs) must not stretch the axis
        longest = statistics.median(max(c.steps[-1] for c in runs) for runs in by_variant.values())
        budgets = tuple(f * longest for f in fractions)
        accs = {v: [_mean_at(runs, budget) for budget in budgets] for v, runs in by_variant.items()}
        ranks: dict[str, list[int | None]] = {v: [] for v in by_variant}
        for i in range(len(budgets)):
            known = [a[i] for a in accs.values() if a[i] is not None]
            for v, a in accs.items():
                ranks[v].append(None if a[i] is None else 1 + sum(k > a[i] for k in known))
        out += [BudgetRank(d, b, v, budgets, tuple(accs[v]), tuple(ranks[v])) for v in by_variant]
    return out


def _mean_at(runs: list[RunCurve], steps: float) -> float | None:
    at = [accuracy_at(c, steps) for c in runs]
    return None if any(a is None for a in at) else math.fsum(a for a in at if a is not None) / len(at)


def ranks_markdown(ranks: list[BudgetRank], fractions: tuple[float, ...] = BUDGET_FRACTIONS) -> str:
    """One table per pair: rows cells (by rank at the full budget), columns the budgets: ``rank (mean val %)``."""
    out = []
    for pair in dict.fromkeys((r.dataset, r.backbone) for r in ranks):
        mine = sorted((r for r in ranks if (r.dataset, r.backbone) == pair), key=_final_rank)
        head = " | ".join(f"{f:.0%} ({s:,.4g} steps)" for f, s in zip(fractions, mine[0].budgets))
        out += [f"**{pair[0]} / {pair[1]}**", "", f"| cell | {head} |", "|---|" + "---:|" * len(fractions)]
        for r in mine:
            vals = ["-" if k is None or a is None else f"{k} ({a:.2f})" for k, a in zip(r.ranks, r.accs)]
            out.append(f"| {r.variant} | " + " | ".join(vals) + " |")
        changed = any(len({k for k in r.ranks if k is not None}) > 1 for r in mine)
        out += [
            "",
            "The ranking changes with the budget." if changed else "The ranking is the same at every budget.",
            "",
        ]
    return "\n".join(out)


def _final_rank(r: BudgetRank) -> tuple[float, str]:
    k = r.ranks[-1]
    return (math.inf if k is None else k, r.variant)


def plot_budget(
    curves: dict[tuple[str, str], dict[str, list[RunCurve]]], path: Path, axis: str, cells: list[Cell]
) -> Path | None:
    """Validation accuracy vs ``axis`` (``steps`` or ``seconds``), per pair a subplot of the whole curves and
    below it the same zoomed to the band of the runs' best accuracies (where the ranking is decided): the mean
    over seeds (solid, while every seed runs), each seed (thin), its selected epoch (o) and its end: early stop (x) or
    the epoch cap (|)."""
    if not curves:
        return None
    plt = _plt()
    fig, axes = _axes(plt, len(curves), rows_per=2, width=5.6, height=3.6)
    cols = axes.shape[1]
    what = "optimizer steps" if axis == "steps" else "training seconds (sum of epoch_seconds)"
    for k, ((d, b), by_variant) in enumerate(curves.items()):
        whole, zoom = axes[2 * (k // cols)][k % cols], axes[2 * (k // cols) + 1][k % cols]
        for ax in (whole, zoom):
            _draw_curves(ax, by_variant, axis)
            ax.set_xscale("log")  # a cheap cell's long run (a cached probe) would squeeze the others to the left
            ax.set(xlabel=f"{what} (log scale)", ylabel="validation top-1 (%)")
            ax.grid(alpha=0.3)
        _chance_line(whole, [c for c in cells if (c.dataset, c.backbone) == (d, b)])
        for marker, text in (("o", "selected epoch"), ("x", "early stop"), ("|", "epoch cap (budget-limited)")):
            whole.plot([], [], marker, color="0.3", ls="none", mfc="none", label=text)
        whole.legend(fontsize=7, loc="lower right")
        whole.set_title(f"{d} / {b}", fontsize=9)
        runs = [c for rs in by_variant.values() for c in rs]
        zoom.set_ylim(min(max(c.val_acc) for c in runs) - 1.0, max(max(c.val_acc) for c in runs) + 0.5)
        zoom.set_title(f"{d} / {b}: zoomed to the best accuracies", fontsize=9)
    for k in range(len(curves), axes.shape[0] // 2 * cols):  # the empty places of the last row pair
        axes[2 * (k // cols)][k % cols].axis("off")
        axes[2 * (k // cols) + 1][k % cols].axis("off")
    return _save(fig, plt, path)


def _draw_curves(ax: Any, by_variant: dict[str, list[RunCurve]], axis: str) -> None:
    import matplotlib

    many = len(by_variant) > 10  # tab10 would give two cells one color
    for i, (v, runs) in enumerate(by_variant.items()):
        color = matplotlib.colormaps["tab20"](i % 20) if many else f"C{i}"
        xs, accs = mean_curve(runs, axis)
        ax.plot(xs, accs, "-", color=color, lw=2, label=v)
        for c in runs:
            x = c.x(axis)
            ax.plot(x, c.val_acc, "-", color=color, lw=0.7, alpha=0.35)
            if c.best_epoch in c.epochs:
                j = c.epochs.index(c.best_epoch)
                ax.plot(x[j], c.val_acc[j], "o", color=color, ms=5, mfc="none")
            ax.plot(x[-1], c.val_acc[-1], "x" if c.stopped_early else "|", color=color, ms=8, mew=1.5)
