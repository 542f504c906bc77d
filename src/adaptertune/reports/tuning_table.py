"""The learning-rate table of a report: the lr each cell trained with and how it was set; and, for searches cut
by a pruner, what the search trained against the full grid (pure).

A tuning record (``summary.json`` ``tuning``, :func:`adaptertune.sweeps.tuning_runs.choose`) lists each tuning
run with the epochs it trained, its seconds and the epoch the pruner stopped it at. A run the pruner stopped
would have trained on in the full grid, how far is unknown: at most to the budget's cap (early stopping may end
it sooner). So the full grid's cost is known exactly only when nothing was pruned; otherwise it is bounded by
:func:`search_cost`.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

from .collect import Cell

__all__ = [
    "SEARCH_NOTE",
    "SearchCost",
    "grid_edge_warnings",
    "grid_edges",
    "lr_markdown",
    "lr_rows",
    "lr_selection",
    "search_cost",
    "search_markdown",
    "search_rows",
    "tuning_note",
]

SEARCH_NOTE = (
    "Spent: epochs and seconds (summed train_seconds) of every tuning run of the search. Full grid: what the "
    "same search trains without a pruner. A pruned run's remaining epochs are unknown, at most (cap - pruned "
    "epoch) each (early stopping may end it sooner), so the full grid is at most spent + that sum; its seconds "
    "are estimated at each pruned run's own seconds per epoch. Pruned: the runs the pruner stopped, at the epoch "
    "it stopped them; a pruned run is no candidate. The exact saving and whether the pick changes come from "
    "replaying a full-grid search: benchmarks/pruning_saving.py."
)


def lr_selection(tuning: dict[str, Any] | None) -> str:
    """How a run's learning rate (and weight decay) was set: ``fixed``, or the validation search that chose it.

    Example: ``validation: lr 0.0003,0.001,0.003 -> 0.001 (2 epochs, seeds 0)``.
    """
    if not tuning:
        return "fixed"
    choices = [
        f"{key.rsplit('.', 1)[-1]} {','.join(f'{v:g}' for v in tuning['grid'][key])} -> {tuning['chosen'][key]:g}"
        for key in tuning["keys"]
    ]
    budget = tuning["budget"]
    seeds = ",".join(map(str, budget["seeds"]))
    return f"validation: {'; '.join(choices)} ({budget['epochs']} epochs, seeds {seeds})"


def lr_rows(cells: list[Cell]) -> list[dict[str, Any]]:
    """One row per cell: the learning rate(s) its runs trained with and how they were set."""
    return [
        {
            "dataset": c.dataset,
            "backbone": c.backbone,
            "variant": c.variant,
            "lr": ",".join(sorted({"?" if r.lr is None else f"{r.lr:g}" for r in c.runs})),
            "selection": "; ".join(sorted({lr_selection(r.tuning) for r in c.runs})),
        }
        for c in cells
    ]


def lr_markdown(cells: list[Cell]) -> str:
    """The learning-rate table of the report (Markdown)."""
    lines = ["| dataset | backbone | variant | lr | selection |", "|---|---|---|---:|---|"]
    lines += [
        f"| {r['dataset']} | {r['backbone']} | {r['variant']} | {r['lr']} | {r['selection']} |" for r in lr_rows(cells)
    ]
    return "\n".join(lines) + "\n"


def tuning_note(cells: list[Cell]) -> str:
    """One line under the learning-rate table: the selection rule the tuned runs recorded, or that none was tuned."""
    rules = sorted({r.tuning.get("rule", "?") for c in cells for r in c.runs if r.tuning})
    if not rules:
        return "No learning rate was tuned: each run used its config's value (or its method's default)."
    return "Tuned on validation, never on test: " + " / ".join(rules) + "."


def grid_edges(tuning: dict[str, Any] | None) -> list[tuple[str, float, str, list[float]]]:
    """The tuned keys whose chosen value is the smallest or largest of a grid of 2 or more values:
    ``(key, value, "top" | "bottom", grid)`` each; the best value may lie outside the grid."""
    out = []
    for key in (tuning or {}).get("keys", []):
        grid = sorted(tuning["grid"][key])
        chosen = tuning["chosen"][key]
        if len(grid) > 1 and chosen in (grid[0], grid[-1]):
            out.append((key, chosen, "top" if chosen == grid[-1] else "bottom", grid))
    return out


def grid_edge_warnings(cells: list[Cell]) -> list[str]:
    """One warning per cell and tuned key chosen on the edge of its grid, e.g. ``warning: digits / vit_t /
    head: train.lr 0.01 is the top of its grid (0.0001, 0.001, 0.01); extend the grid upwards``."""
    lines = []
    for c in cells:
        for key, value, edge, grid in sorted(
            {(k, v, e, tuple(g)) for r in c.runs for k, v, e, g in grid_edges(r.tuning)}
        ):
            way = "upwards" if edge == "top" else "downwards"
            lines.append(
                f"warning: {c.dataset} / {c.backbone} / {c.variant}: {key} {value:g} is the {edge} of its grid "
                f"({', '.join(f'{g:g}' for g in grid)}); the best value may lie beyond it: extend the grid {way}"
            )
    return lines


@dataclass(frozen=True)
class SearchCost:
    """What one pruned search trained, against the full grid (:data:`SEARCH_NOTE`)."""

    pruner: str  # e.g. "halving (min_epochs 1, reduction 3)"
    runs: int  # tuning runs
    cap: int  # epochs of the budget (each run's most)
    spent_epochs: int
    spent_seconds: float  # nan when a run did not record its seconds
    full_epochs_max: int  # the full grid's epochs: spent + (cap - pruned epoch) over the pruned runs
    full_seconds_est: float  # spent + each pruned run's remaining epochs (at most) x its seconds per epoch
    pruned: tuple[tuple[str, int], ...]  # (run, the epoch the pruner stopped it at), run named by what differs
    chosen: dict[str, float]

    @property
    def exact(self) -> bool:
        """Nothing was pruned: the full grid trains what the search trained."""
        return not self.pruned


def _pruner_text(pruner: dict[str, Any]) -> str:
    options = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in pruner.items() if k != "name")
    return f"{pruner.get('name', '?')} ({options})" if options else str(pruner.get("name", "?"))


def _run_labels(names: list[str]) -> list[str]:
    """Run folder names without the parts every run shares (``seed=0,epochs=3,lr=0.03`` -> ``lr=0.03``)."""
    parts = [n.split(",") for n in names]
    shared = set.intersection(*map(set, parts)) if len(parts) > 1 else set()
    return [",".join(p for p in ps if p not in shared) or n for ps, n in zip(parts, names, strict=True)]


def search_cost(tuning: dict[str, Any] | None) -> SearchCost | None:
    """The cost of a search cut by a pruner, from its tuning record; None for a search without one (or a record
    written before the pruner existed), which the learning-rate table describes alone."""
    if not tuning or not tuning.get("pruner") or "trained" not in tuning:
        return None
    trained, cap = tuning["trained"], int(tuning["budget"]["epochs"])
    labels = _run_labels([t["run"] for t in trained])
    pruned = [(label, t) for label, t in zip(labels, trained, strict=True) if t.get("pruned_at_epoch") is not None]
    seconds = [math.nan if t.get("train_seconds") is None else float(t["train_seconds"]) for t in trained]
    left = [(cap - int(t["pruned_at_epoch"]), t) for _, t in pruned]
    rate = [math.nan if t.get("train_seconds") is None else t["train_seconds"] / int(t["epochs"]) for _, t in left]
    spent_epochs = sum(int(t["epochs"]) for t in trained)
    return SearchCost(
        pruner=_pruner_text(tuning["pruner"]),
        runs=len(trained),
        cap=cap,
        spent_epochs=spent_epochs,
        spent_seconds=math.fsum(seconds),
        full_epochs_max=spent_epochs + sum(n for n, _ in left),
        full_seconds_est=math.fsum(seconds) + math.fsum(n * r for (n, _), r in zip(left, rate, strict=True)),
        pruned=tuple((label, int(t["pruned_at_epoch"])) for label, t in pruned),
        chosen=dict(tuning["chosen"]),
    )


def _seconds(x: float) -> str:
    return "? s (not recorded)" if math.isnan(x) else f"{x:.1f} s"


def search_rows(cells: list[Cell]) -> list[dict[str, Any]]:
    """One row per (cell, pruned search): the pruner, what the search spent, the full grid's bound, the pruned
    runs and the chosen values; no rows when no search had a pruner."""
    rows = []
    for c in cells:
        records = {json.dumps(r.tuning, sort_keys=True): r.tuning for r in c.runs if r.tuning}
        for record in records.values():
            cost = search_cost(record)
            if cost is None:
                continue
            if cost.exact:
                full = f"{cost.spent_epochs} epochs (nothing pruned: the same)"
            else:
                full = f"<= {cost.full_epochs_max} epochs, ~{_seconds(cost.full_seconds_est)} (est.)"
            rows.append(
                {
                    "dataset": c.dataset,
                    "backbone": c.backbone,
                    "variant": c.variant,
                    "pruner": cost.pruner,
                    "runs": cost.runs,
                    "spent": f"{cost.spent_epochs} epochs, {_seconds(cost.spent_seconds)}",
                    "full grid": full,
                    "pruned (at epoch)": ", ".join(f"{run} @{e}" for run, e in cost.pruned) or "none",
                    "chosen": ", ".join(f"{k.rsplit('.', 1)[-1]} {v:g}" for k, v in cost.chosen.items()),
                }
            )
    return rows


def search_markdown(cells: list[Cell]) -> str:
    """The pruned searches' table and its note (Markdown); ``""`` when no search had a pruner."""
    rows = search_rows(cells)
    if not rows:
        return ""
    head = list(rows[0])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(str(r[k]) for k in head) + " |" for r in rows]
    return "\n".join(lines) + "\n\n" + SEARCH_NOTE + "\n"
