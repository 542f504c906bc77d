"""Placement at matched parameters: each partial placement against the all-blocks variant nearest in
trainable parameters (pure).

A family is the adapter-style cells of one (dataset, backbone, method, adapter options other than rank and
placement, setup other than the learning rate and weight decay, which may be tuned per variant). When it
holds the ``all`` placement and at least one other, every other placement's cell is compared, over paired
replicates (:func:`.tables.paired_gain`), with the ``all`` cell whose trainable count is closest to its own
(ties: the lower rank), so ``every:2 r=32`` reads against ``all r=16`` at (nearly) the same number of
trainable parameters.
"""

from __future__ import annotations

import html
import json
from dataclasses import dataclass
from typing import Any

from .collect import Cell
from .stats import WIN_RULE
from .tables import Gain, comparable, interval_text, paired_gain

__all__ = ["PlacementRow", "placement_html", "placement_markdown", "placement_rows", "placement_text"]

_TUNED = ("train.lr", "train.weight_decay")  # may be selected per variant: each is read at its own
_NOTE = (
    "Each partial placement is compared with the all-blocks variant of the same adapter whose trainable "
    "parameter count is closest (the reference). " + WIN_RULE
)


def placement_text(placement: Any) -> str:
    """``all``, ``every:2``, or ``0,3,5`` for a list of blocks."""
    return ",".join(map(str, placement)) if isinstance(placement, list) else str(placement)


@dataclass
class PlacementRow:
    cell: Cell
    placement: str
    reference: Cell | None  # None for an all-blocks row (it is a reference)
    gain: Gain | None


def _placement(c: Cell) -> str:
    return placement_text(c.runs[0].adapter.get("placement", "all"))


def _family(c: Cell) -> tuple[str, ...]:
    options = {k: v for k, v in c.runs[0].adapter.items() if k not in ("rank", "placement")}
    setup = {k: v for k, v in c.runs[0].setup.items() if k not in _TUNED}
    return c.dataset, c.backbone, c.method, json.dumps([options, setup], sort_keys=True, default=str)


def placement_rows(cells: list[Cell]) -> list[PlacementRow]:
    """Rows of every family with the ``all`` placement and another one: the all-blocks cells that serve as a
    reference, then each partial placement with its matched reference and paired gain."""
    families: dict[tuple[str, ...], list[Cell]] = {}
    for c in cells:
        if c.rank is not None and c.runs[0].adapter:
            families.setdefault(_family(c), []).append(c)
    out = []
    for fam in families.values():
        alls = [c for c in fam if _placement(c) == "all"]
        others = [c for c in fam if _placement(c) != "all"]
        if not alls or not others:
            continue
        rows = []
        for c in sorted(others, key=lambda c: (c.trainable_params, _placement(c))):
            ok = [a for a in alls if comparable(a, c)]
            ref = min(ok, key=lambda a: (abs(a.trainable_params - c.trainable_params), a.rank)) if ok else None
            rows.append(PlacementRow(c, _placement(c), ref, paired_gain(c, ref) if ref else None))
        used = {id(r.reference) for r in rows if r.reference is not None}
        refs = [PlacementRow(a, "all", None, None) for a in sorted(alls, key=lambda a: a.rank) if id(a) in used]
        out += refs + rows
    return out


_HEAD = ["dataset", "backbone", "variant", "placement", "rank", "trainable params", "test acc", "vs"]
_HEAD += ["gain (points)", "95% CI (t)", "verdict", "paired"]


def _cells(r: PlacementRow) -> list[str]:
    c, g = r.cell, r.gain
    acc = f"{c.mean:.2f} ± {c.std:.2f}" if c.n > 1 else f"{c.mean:.2f}"
    row = [c.dataset, c.backbone, c.variant, r.placement, str(c.rank), f"{c.trainable_params:,}", acc]
    if g is None:
        return row + [("reference" if r.reference is None and r.placement == "all" else "no comparable all"), "", ""]
    return row + [g.baseline, f"{g.delta:+.2f}", interval_text(*g.ci), g.verdict, str(g.seeds_shared)]


def placement_markdown(rows: list[PlacementRow]) -> str:
    lines = ["| " + " | ".join(_HEAD) + " |", "|---|---|---|---|---:|---:|---:|---|---:|---:|---|---:|"]
    lines += ["| " + " | ".join(_cells(r) + [""] * (len(_HEAD) - len(_cells(r)))) + " |" for r in rows]
    return "\n".join(lines) + f"\n\n{_NOTE}\n"


def placement_html(rows: list[PlacementRow]) -> str:
    esc = html.escape
    head = "".join(f"<th>{esc(h)}</th>" for h in _HEAD)
    body = "".join(
        "<tr>" + "".join(f"<td>{esc(v)}</td>" for v in _cells(r) + [""] * (len(_HEAD) - len(_cells(r)))) + "</tr>"
        for r in rows
    )
    return f"<p>{esc(_NOTE)}</p><table><tr>{head}</tr>{body}</table>"
