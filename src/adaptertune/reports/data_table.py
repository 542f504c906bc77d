"""Which data each report cell used: dataset, folder, classes, chance level and images read per split."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .collect import Cell

__all__ = ["DATA_NOTE", "data_markdown", "data_rows"]

SPLITS = ("train", "val", "test")
DATA_NOTE = (
    "Images read per split by each cell's runs (after the validation split and subsets; unreadable files, "
    "named in each run folder's skipped.txt, are not counted); chance = 100 / classes."
)


def _unreadable(cell: Cell) -> dict[str, int | None]:
    """The most unreadable images any of the cell's runs skipped per split (None: a run that did not count)."""
    out: dict[str, int | None] = {}
    for r in cell.runs:
        for split, n in r.unreadable.items():
            known = out.get(split, 0)
            out[split] = None if n is None or known is None else max(n, known)
    return out


def _read(size: Any, skipped: int | None) -> Any:
    if not isinstance(size, int) or not skipped:
        return size if skipped is not None else f"<= {size}"
    return size - skipped


def data_rows(cells: list[Cell]) -> list[dict[str, Any]]:
    """What data each cell used: one row per (dataset, folder, classes, split sizes), with the cells using it.

    ``chance`` is the top-1 % of uniform guessing (100 / classes); ``train``, ``val`` and ``test`` are the
    images per split the runs read (trained, selected and tested on), unreadable files left out; a
    ``skipped`` column (``train 1, test 1``; ``?`` where a run did not count) appears when any was skipped.
    """
    groups: dict[tuple[Any, ...], dict[str, Any]] = {}
    for c in cells:
        r = c.runs[0]
        sizes, gone = r.split_sizes, _unreadable(c)
        root = r.protocol.get("data_root")
        key = (c.dataset, root, c.num_classes, tuple(sorted(sizes.items())), tuple(sorted(gone.items())))
        row = groups.setdefault(
            key,
            {
                "dataset": c.dataset,
                "folder": Path(root).name if isinstance(root, str) else "default location",
                "classes": c.num_classes or "?",
                "chance_pct": "?" if c.chance is None else f"{c.chance:.2f}",
                **{s: _read(sizes.get(s, "?"), gone.get(s, 0)) for s in SPLITS},
                "skipped": ", ".join(f"{s} {'?' if n is None else n}" for s, n in gone.items()) or "-",
                "cells": [],
            },
        )
        row["cells"].append(f"{c.backbone}: {c.variant}")
    rows = [{**row, "cells": ", ".join(row["cells"])} for row in groups.values()]
    if all(r["skipped"] == "-" for r in rows):
        rows = [{k: v for k, v in r.items() if k != "skipped"} for r in rows]
    return rows


def data_markdown(cells: list[Cell]) -> str:
    rows = data_rows(cells)
    head = [k.replace("_pct", " %") for k in rows[0]] if rows else []
    align = ["---:" if k in ("classes", "chance_pct", *SPLITS) else "---" for k in (rows[0] if rows else [])]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(align) + "|"]
    lines += ["| " + " | ".join(str(v) for v in r.values()) + " |" for r in rows]
    return "\n".join(lines) + f"\n\n{DATA_NOTE}\n"
