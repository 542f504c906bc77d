"""The report's "Leaderboard and budget curves" section: the leaderboard (:mod:`.leaderboard`), the ranking at
a few budgets and the budget curves (:mod:`.budget`), the Pareto plot; its files, Markdown and HTML.

Shown once some (dataset, backbone) pair has :data:`MIN_CELLS` cells whose runs all recorded validation curves
(``metrics.jsonl`` with ``step``, ``epoch_seconds`` and ``val_acc``).
"""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass, field
from pathlib import Path

from ..atomic import atomic_write_csv, atomic_write_text
from .budget import BUDGET_RULE, budget_curves, budget_rows, plot_budget, ranks_at_budgets, ranks_markdown
from .collect import Cell
from .leaderboard import DEFAULT_REFERENCE, board_markdown, board_rows, csv_rows, plot_pareto
from .markdown import markdown_html

__all__ = ["MIN_CELLS", "Board", "write_board"]

MIN_CELLS = 3  # the section appears once a pair has this many cells with validation curves


@dataclass
class Board:
    """The report section: its title, Markdown (table.md) and HTML (report.html, images embedded), the files."""

    title: str
    markdown: str
    html: str
    files: list[Path] = field(default_factory=list)


def write_board(cells: list[Cell], out_dir: Path, reference: str = DEFAULT_REFERENCE) -> Board | None:
    """Write ``leaderboard.csv``, ``leaderboard.md``, ``budget.csv``, ``budget_steps.png``,
    ``budget_seconds.png`` and ``pareto.png`` into ``out_dir``; None (nothing written) unless some (dataset,
    backbone) pair has :data:`MIN_CELLS` cells whose runs all have validation curves."""
    curves = budget_curves(cells)
    if not any(len(by_variant) >= MIN_CELLS for by_variant in curves.values()):
        return None
    rows = board_rows(cells, reference)
    budget_md = BUDGET_RULE + "\n\n" + ranks_markdown(ranks_at_budgets(curves))
    md = "### Leaderboard\n\n" + board_markdown(rows) + "\n### Ranking at a budget of steps\n\n" + budget_md
    board = Board("Leaderboard and budget curves", md, "")
    for name, table in (("leaderboard.csv", csv_rows(rows)), ("budget.csv", budget_rows(curves))):
        atomic_write_csv(out_dir / name, table)
        board.files.append(out_dir / name)
    atomic_write_text(out_dir / "leaderboard.md", md)
    board.files.append(out_dir / "leaderboard.md")
    images = [
        ("Test accuracy vs trainable parameters, Pareto frontier", plot_pareto(rows, out_dir / "pareto.png", cells)),
        ("Validation accuracy vs optimizer steps", plot_budget(curves, out_dir / "budget_steps.png", "steps", cells)),
        (
            "Validation accuracy vs training seconds",
            plot_budget(curves, out_dir / "budget_seconds.png", "seconds", cells),
        ),
    ]
    board.files += [p for _, p in images if p is not None]
    board.html = markdown_html(md) + "".join(
        f"<h3>{html.escape(t)}</h3><img alt='{html.escape(t)}' src='data:image/png;base64,"
        f"{base64.b64encode(p.read_bytes()).decode()}'>"
        for t, p in images
        if p is not None
    )
    return board
