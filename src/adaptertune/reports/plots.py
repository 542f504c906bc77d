"""PNG plots of a report (matplotlib, imported lazily: ``pip install 'adaptertune[report]'``).

One subplot per (dataset, backbone) pair in each figure: accuracy vs rank with std bands, accuracy vs
trainable parameters with the Pareto front, and training curves averaged over seeds.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from ..atomic import atomic_write_stream
from ..extras import require
from .collect import Cell, mean_std
from .tables import sorted_variants

__all__ = [
    "pareto_front",
    "plot_accuracy_vs_params",
    "plot_accuracy_vs_rank",
    "plot_rank_elbows",
    "plot_training_curves",
    "rank_elbows",
]

_MAX_PAIRS = 12


def _plt() -> Any:
    matplotlib = require("matplotlib", "Report plots")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _pairs(cells: list[Cell]) -> list[tuple[str, str]]:
    return sorted({(c.dataset, c.backbone) for c in cells})[:_MAX_PAIRS]


def _axes(plt: Any, n: int, rows_per: int = 1, width: float = 4.8, height: float = 3.6) -> tuple[Any, list[Any]]:
    cols = min(n, 3)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows * rows_per, cols, figsize=(width * cols, height * rows * rows_per), squeeze=False)
    return fig, axes


def _save(fig: Any, plt: Any, path: Path) -> Path:
    fig.tight_layout()
    atomic_write_stream(path, lambda f: fig.savefig(f, format="png", dpi=90))
    plt.close(fig)
    return path


def _rank_family(cell: Cell) -> str:
    """The variant with its rank removed: cells of one family differ only in rank."""
    return " ".join(p for p in cell.variant.split() if not p.startswith("r="))


def _chance_line(ax: Any, cells: list[Cell]) -> None:
    """A dotted line at the accuracy of uniform guessing (100 / classes), when the class count is known."""
    chance = next((c.chance for c in cells if c.chance is not None), None)
    if chance is not None:
        ax.axhline(chance, ls=":", color="0.4", label=f"chance ({chance:.1f}%)")


def _human(n: float) -> str:
    """Tick label of a parameter count: 3.9k, 150k, 21M."""
    for div, unit in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if n >= div:
            return f"{n / div:.3g}{unit}"
    return f"{n:.3g}"


def _params_axis(ax: Any, counts: list[int]) -> None:
    """Log axis of parameter counts labelled 2k, 5k, 10k (1-2-5 steps over up to 2 decades, else one per
    decade), minor ticks unlabelled so labels never overlap."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    ax.set_xscale("log")
    positive = [c for c in counts if c > 0]
    decades = math.log10(max(positive) / min(positive)) if positive else 0.0
    ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0) if decades <= 2 else (1.0,), numticks=8))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: _human(x)))
    ax.xaxis.set_minor_formatter(NullFormatter())


def _rank_ticks(ax: Any, ranks: list[int]) -> None:
    """Log2 rank axis labelled with the ranks themselves (1, 2, 4, ...), not 2^k."""
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

    ax.set_xscale("log", base=2)
    if ranks:
        ax.xaxis.set_major_locator(FixedLocator(sorted(set(ranks))))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x:g}"))
    ax.xaxis.set_minor_locator(NullLocator())


def _rank_axes(ax: Any, dataset: str, backbone: str, ranks: list[int] | None = None) -> None:
    """Log2 rank axis, labels, title, grid and legend of one accuracy-vs-rank subplot."""
    _rank_ticks(ax, ranks or [])
    ax.set(xlabel="adapter rank r", ylabel="top-1 test accuracy (%)")
    ax.set_title(f"{dataset} / {backbone}", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)


def plot_accuracy_vs_rank(cells: list[Cell], path: Path) -> Path | None:
    """Mean top-1 vs rank (log2 axis) with a ±std band, head/full as dashed lines; None if no pair has 2 ranks."""
    pairs = [
        p
        for p in _pairs(cells)
        if len({c.rank for c in cells if (c.dataset, c.backbone) == p and c.rank is not None}) >= 2
    ]
    if not pairs:
        return None
    plt = _plt()
    fig, axes = _axes(plt, len(pairs))
    for ax, (d, b) in zip(axes.flat, pairs):
        mine = [c for c in cells if (c.dataset, c.backbone) == (d, b)]
        for family in sorted({_rank_family(c) for c in mine if c.rank is not None}):
            fam = sorted((c for c in mine if c.rank is not None and _rank_family(c) == family), key=lambda c: c.rank)
            x = [c.rank for c in fam]
            m = [c.mean for c in fam]
            s = [c.std for c in fam]
            ax.plot(x, m, "o-", label=family)
            ax.fill_between(x, [a - e for a, e in zip(m, s)], [a + e for a, e in zip(m, s)], alpha=0.25)
        for base, style in (("head", "C3"), ("full", "C2")):
            for c in mine:
                if c.variant == base:
                    ax.axhline(c.mean, ls="--", color=style, label=f"{base} ({c.mean:.2f})")
        _chance_line(ax, mine)
        _rank_axes(ax, d, b, [c.rank for c in mine if c.rank is not None])
    for ax in list(axes.flat)[len(pairs) :]:
        ax.axis("off")
    return _save(fig, plt, path)


def rank_elbows(
    cells: list[Cell], min_ranks: int = 3, n_boot: int = 2000, rule: str = "effect", delta: float | None = None
) -> list[Any]:
    """The elbow (``analysis.elbow_table.elbow_rows``: the effect-size rule by default, or ``paired``) of every
    rank-swept family with ``min_ranks`` ranks or more; ``n_boot`` is the paired rule's bootstrap, ``delta``
    the effect rule's margin (None: its default).

    Returns:
        One ``analysis.elbow_table.ElbowRow`` per family (group: dataset, backbone, variant); a family that
        cannot be fitted (one seed per rank: "needs >= 2 seeds") keeps its row with the reason.
    """
    from ..analysis.elbow_table import elbow_rows

    rows = [
        {
            "dataset": c.dataset,
            "backbone": c.backbone,
            "variant": _rank_family(c),
            "rank": c.rank,
            "seed": r.pair,  # the seed, or (seed, fold) under cross-validation
            "test_acc": r.test_acc,
        }
        for c in cells
        if c.rank is not None
        for r in c.runs
        if r.test_acc is not None
    ]
    families: dict[tuple[str, str, str], set[int]] = {}
    for row in rows:
        families.setdefault((row["dataset"], row["backbone"], row["variant"]), set()).add(row["rank"])
    rows = [row for row in rows if len(families[(row["dataset"], row["backbone"], row["variant"])]) >= min_ranks]
    if not rows:
        return []
    opts: dict[str, Any] = {"n_boot": n_boot} if rule == "paired" else {}
    if delta is not None:
        opts["delta"] = delta
    return elbow_rows(rows, group_by=["dataset", "backbone", "variant"], rule=rule, **opts)


def plot_rank_elbows(fits: list[Any], path: Path) -> Path | None:
    """One subplot per fitted family: seeds, mean ± std, the best-weighted curve and the elbow with its interval."""
    from ..analysis.elbow_table import plot_elbow

    fits = [f for f in fits if f.result is not None][:_MAX_PAIRS]
    if not fits:
        return None
    plt = _plt()
    fig, axes = _axes(plt, len(fits))
    for ax, row in zip(axes.flat, fits):
        plot_elbow(ax, row.result, label=row.group["variant"])
        _rank_axes(ax, row.group["dataset"], row.group["backbone"], [int(r) for r in row.result.ranks])
    for ax in list(axes.flat)[len(fits) :]:
        ax.axis("off")
    return _save(fig, plt, path)


def pareto_front(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Points (params, acc) not beaten by a point with fewer or equal params and higher accuracy; by params."""
    front: list[tuple[float, float]] = []
    for p in sorted(points, key=lambda p: (p[0], -p[1])):
        if not front or p[1] > front[-1][1]:
            front.append(p)
    return front


def plot_accuracy_vs_params(cells: list[Cell], path: Path) -> Path | None:
    """Mean top-1 (± std) vs trainable parameters (log axis), with the Pareto front."""
    pairs = _pairs(cells)
    if not pairs:
        return None
    plt = _plt()
    fig, axes = _axes(plt, len(pairs))
    for ax, (d, b) in zip(axes.flat, pairs):
        mine = [c for c in cells if (c.dataset, c.backbone) == (d, b)]
        for i, v in enumerate(sorted_variants(mine)):
            c = next(c for c in mine if c.variant == v)
            ax.errorbar(c.trainable_params, c.mean, yerr=c.std, fmt="o", color=f"C{i % 10}", capsize=3, label=v)
        front = pareto_front([(c.trainable_params, c.mean) for c in mine])
        ax.step([p[0] for p in front], [p[1] for p in front], where="post", color="k", alpha=0.5, label="Pareto front")
        _chance_line(ax, mine)
        _params_axis(ax, [c.trainable_params for c in mine])
        ax.set(xlabel="trainable parameters", ylabel="top-1 test accuracy (%)")
        ax.set_title(f"{d} / {b}", fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    for ax in list(axes.flat)[len(pairs) :]:
        ax.axis("off")
    return _save(fig, plt, path)


def _mean_curve(cell: Cell, key: str) -> tuple[list[int], list[float], list[float]]:
    epochs = sorted({h["epoch"] for r in cell.runs for h in r.history if key in h})
    means, stds = [], []
    for e in epochs:
        m, s = mean_std([h[key] for r in cell.runs for h in r.history if h.get("epoch") == e and key in h])
        means.append(m)
        stds.append(s)
    return epochs, means, stds


def plot_training_curves(cells: list[Cell], path: Path) -> Path | None:
    """Per pair: training loss and validation accuracy (training accuracy without a val split) per epoch."""
    pairs = [p for p in _pairs(cells) if any(r.history for c in cells if (c.dataset, c.backbone) == p for r in c.runs)]
    if not pairs:
        return None
    plt = _plt()
    from matplotlib.ticker import FixedLocator, MaxNLocator

    fig, axes = plt.subplots(len(pairs), 2, figsize=(10, 3.4 * len(pairs)), squeeze=False)
    for row, (d, b) in zip(axes, pairs):
        mine = [c for c in cells if (c.dataset, c.backbone) == (d, b)]
        has_val = any("val_acc" in h for c in mine for r in c.runs for h in r.history)
        acc_key = "val_acc" if has_val else "train_acc"
        for i, v in enumerate(sorted_variants(mine)):
            c = next(c for c in mine if c.variant == v)
            for ax, key in zip(row, ("train_loss", acc_key)):
                x, m, s = _mean_curve(c, key)
                if x:
                    ax.plot(x, m, "o-", color=f"C{i % 10}", label=v)
                    ax.fill_between(x, [a - e for a, e in zip(m, s)], [a + e for a, e in zip(m, s)], alpha=0.2)
        _chance_line(row[1], mine)
        label = "validation" if has_val else "training"
        row[0].set(xlabel="epoch", ylabel="training loss (cross-entropy)")
        row[1].set(xlabel="epoch", ylabel=f"{label} top-1 (%)")
        row[0].set_title(f"{d} / {b}", fontsize=9)
        row[1].set_title(f"{d} / {b}", fontsize=9)
        epochs = sorted({h["epoch"] for c in mine for r in c.runs for h in r.history if "epoch" in h})
        for ax in row:  # whole epochs only (one epoch: the tick "1", not 0.96 ... 1.04)
            ax.xaxis.set_major_locator(FixedLocator(epochs) if len(epochs) <= 12 else MaxNLocator(integer=True))
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
    return _save(fig, plt, path)
