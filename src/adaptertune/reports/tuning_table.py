"""The learning-rate table of a report: the lr each cell trained with and how it was set (pure)."""

from __future__ import annotations

from typing import Any

from .collect import Cell

__all__ = ["grid_edge_warnings", "grid_edges", "lr_markdown", "lr_rows", "lr_selection", "tuning_note"]


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
