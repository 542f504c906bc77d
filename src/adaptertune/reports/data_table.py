"""Which data each report cell used: dataset, folder, classes, chance level and images per split."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .collect import Cell

__all__ = ["data_markdown", "data_rows"]


def data_rows(cells: list[Cell]) -> list[dict[str, Any]]:
    """What data each cell used: one row per (dataset, folder, classes, split sizes), with the cells using it.

    ``chance`` is the top-1 % of uniform guessing (100 / classes); split sizes are images per split the runs
    trained, selected and tested on (after the validation split and subsets).
    """
    groups: dict[tuple[Any, ...], dict[str, Any]] = {}
    for c in cells:
        r = c.runs[0]
        sizes = r.split_sizes
        root = r.protocol.get("data_root")
        key = (c.dataset, root, c.num_classes, tuple(sorted(sizes.items())))
        row = groups.setdefault(
            key,
            {
                "dataset": c.dataset,
                "folder": Path(root).name if isinstance(root, str) else "default location",
                "classes": c.num_classes or "?",
                "chance_pct": "?" if c.chance is None else f"{c.chance:.2f}",
                "train": sizes.get("train", "?"),
                "val": sizes.get("val", "?"),
                "test": sizes.get("test", "?"),
                "cells": [],
            },
        )
        row["cells"].append(f"{c.backbone}: {c.variant}")
    return [{**row, "cells": ", ".join(row["cells"])} for row in groups.values()]


def data_markdown(cells: list[Cell]) -> str:
    rows = [
        "| dataset | folder | classes | chance % | train | val | test | cells |",
        "|---|---|---:|---:|---:|---:|---:|---|",
    ]
    rows += ["| " + " | ".join(str(v) for v in r.values()) + " |" for r in data_rows(cells)]
    return "\n".join(rows) + "\n\nImages per split each cell's runs used; chance = 100 / classes.\n"
