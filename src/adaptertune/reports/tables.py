"""Tables from aggregated cells: the paper-style accuracy table (Markdown, LaTeX, HTML), gains, parameter shares.

All functions are pure: cells in, text or rows out.
"""

from __future__ import annotations

import html
import math
from dataclasses import dataclass
from typing import Any

from .results import Cell, RunRecord

__all__ = [
    "Gain",
    "gains",
    "gains_markdown",
    "gains_summary",
    "html_table",
    "latex_table",
    "markdown_table",
    "param_shares",
    "results_rows",
    "sorted_variants",
]


def sorted_variants(cells: list[Cell]) -> list[str]:
    """head, full, then adapter-style variants by method, rank and label."""
    order = {"head": 0, "full": 1}
    best = {}
    for c in cells:
        best[c.variant] = (order.get(c.method, 2), c.method, c.rank or 0, c.variant)
    return sorted(best, key=lambda v: best[v])


def _grid(cells: list[Cell]) -> tuple[list[str], list[str], dict[str, list[str]], dict[tuple[str, str, str], Cell]]:
    datasets = sorted({c.dataset for c in cells})
    backbones = sorted({c.backbone for c in cells})
    by_key = {(c.dataset, c.backbone, c.variant): c for c in cells}
    columns = {b: sorted_variants([c for c in cells if c.backbone == b]) for b in backbones}
    return datasets, backbones, columns, by_key


def _fmt(c: Cell | None, counts: set[int]) -> str:
    if c is None:
        return "-"
    text = f"{c.mean:.2f} ± {c.std:.2f}" if c.n > 1 else f"{c.mean:.2f}"
    return text + (f" (n={c.n})" if len(counts) > 1 else "")


def _best(row: list[Cell | None]) -> float:
    means = [c.mean for c in row if c is not None]
    return max(means) if means else math.nan


def markdown_table(cells: list[Cell]) -> str:
    """One table per backbone: rows datasets, columns variants, ``mean ± std`` top-1 %, best in bold."""
    datasets, backbones, columns, by_key = _grid(cells)
    counts = {c.n for c in cells}
    out = []
    for b in backbones:
        cols = columns[b]
        out += [f"### {b}", "", "| dataset | " + " | ".join(cols) + " |", "|---|" + "---:|" * len(cols)]
        for d in datasets:
            row = [by_key.get((d, b, v)) for v in cols]
            if all(c is None for c in row):
                continue
            best = _best(row)
            texts = [f"**{_fmt(c, counts)}**" if c is not None and c.mean == best else _fmt(c, counts) for c in row]
            out.append(f"| {d} | " + " | ".join(texts) + " |")
        out.append("")
    if len(counts) == 1:
        out.append(f"Top-1 test accuracy (%), mean ± std over {counts.pop()} seeds; best per row in bold.")
    else:
        out.append("Top-1 test accuracy (%), mean ± std over seeds (n = seeds per cell); best per row in bold.")
    return "\n".join(out) + "\n"


def _tex_escape(s: str) -> str:
    for a, b in (("\\", r"\textbackslash{}"), ("_", r"\_"), ("&", r"\&"), ("%", r"\%"), ("#", r"\#")):
        s = s.replace(a, b)
    return s


def latex_table(cells: list[Cell]) -> str:
    """Paper-style LaTeX (booktabs): rows datasets, columns the variants of each backbone, best in bold."""
    datasets, backbones, columns, by_key = _grid(cells)
    spec = "l" + "".join("|" + "c" * len(columns[b]) for b in backbones)
    head1 = " & ".join([""] + [rf"\multicolumn{{{len(columns[b])}}}{{c}}{{{_tex_escape(b)}}}" for b in backbones])
    head2 = " & ".join(["Dataset"] + [_tex_escape(v) for b in backbones for v in columns[b]])
    lines = [r"\begin{tabular}{" + spec + "}", r"\toprule", head1 + r" \\", head2 + r" \\", r"\midrule"]
    for d in datasets:
        cells_row = []
        for b in backbones:
            row = [by_key.get((d, b, v)) for v in columns[b]]
            best = _best(row)
            for c in row:
                if c is None:
                    cells_row.append("--")
                    continue
                t = f"{c.mean:.2f}" + (rf"$\pm${c.std:.2f}" if c.n > 1 else "")
                cells_row.append(rf"\textbf{{{t}}}" if c.mean == best else t)
        lines.append(" & ".join([_tex_escape(d), *cells_row]) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    return "\n".join(lines) + "\n"


def html_table(cells: list[Cell]) -> str:
    """The Markdown table's content as HTML tables (one per backbone)."""
    datasets, backbones, columns, by_key = _grid(cells)
    counts = {c.n for c in cells}
    out = []
    for b in backbones:
        cols = columns[b]
        out.append(f"<h3>{html.escape(b)}</h3><table><tr><th>dataset</th>")
        out.append("".join(f"<th>{html.escape(v)}</th>" for v in cols) + "</tr>")
        for d in datasets:
            row = [by_key.get((d, b, v)) for v in cols]
            if all(c is None for c in row):
                continue
            best = _best(row)
            tds = [
                f"<td class='best'>{html.escape(_fmt(c, counts))}</td>"
                if c is not None and c.mean == best
                else f"<td>{html.escape(_fmt(c, counts))}</td>"
                for c in row
            ]
            out.append(f"<tr><td>{html.escape(d)}</td>{''.join(tds)}</tr>")
        out.append("</table>")
    return "\n".join(out)


@dataclass
class Gain:
    """An adapter-style variant against a baseline (head or full) on one (dataset, backbone) pair."""

    dataset: str
    backbone: str
    variant: str
    baseline: str
    delta: float  # mean difference, top-1 points
    seeds_won: int  # seeds where the variant beats the baseline (shared seeds only)
    seeds_shared: int

    @property
    def wins(self) -> bool:
        return self.delta > 0


def gains(cells: list[Cell]) -> list[Gain]:
    """Every non-baseline variant against ``head`` and ``full`` on each pair that has them."""
    by_pair: dict[tuple[str, str], dict[str, Cell]] = {}
    for c in cells:
        by_pair.setdefault((c.dataset, c.backbone), {})[c.variant] = c
    out = []
    for (d, b), variants in sorted(by_pair.items()):
        for v in sorted_variants(list(variants.values())):
            if v in ("head", "full"):
                continue
            for base in ("head", "full"):
                if base not in variants:
                    continue
                mine, theirs = variants[v].accs, variants[base].accs
                shared = sorted(set(mine) & set(theirs))
                won = sum(mine[s] > theirs[s] for s in shared)
                out.append(Gain(d, b, v, base, variants[v].mean - variants[base].mean, won, len(shared)))
    return out


def gains_summary(gs: list[Gain]) -> list[str]:
    """One line per (variant, baseline): pairs won, mean gain, seeds won."""
    lines = []
    first = list(dict.fromkeys((g.variant, g.baseline) for g in gs))  # the table's variant order
    keys = sorted(first, key=lambda k: (k[1] != "head", first.index(k)))
    for variant, base in keys:
        sel = [g for g in gs if g.variant == variant and g.baseline == base]
        name = "head-only" if base == "head" else "full fine-tuning"
        mean = sum(g.delta for g in sel) / len(sel)
        seeds = sum(g.seeds_won for g in sel), sum(g.seeds_shared for g in sel)
        lines.append(
            f"{variant} beats {name} on {sum(g.wins for g in sel)}/{len(sel)} pairs "
            f"(mean gain {mean:+.2f} points; {seeds[0]}/{seeds[1]} seeds)"
        )
    return lines


def gains_markdown(gs: list[Gain]) -> str:
    if not gs:
        return "No pair has both a baseline (head, full) and another variant.\n"
    rows = ["| dataset | backbone | variant | vs | gain (points) | seeds won |", "|---|---|---|---|---:|---:|"]
    rows += [
        f"| {g.dataset} | {g.backbone} | {g.variant} | {g.baseline} | {g.delta:+.2f} | "
        f"{g.seeds_won}/{g.seeds_shared} |"
        for g in gs
    ]
    return "\n".join(rows) + "\n\n" + "\n".join(f"- {line}" for line in gains_summary(gs)) + "\n"


def param_shares(cells: list[Cell]) -> list[dict[str, Any]]:
    """Trainable parameters per (backbone, variant) and their share of full fine-tuning's (same pair),
    averaged over datasets; without a ``full`` cell the share is of the run's total parameters."""
    full = {(c.dataset, c.backbone): c.trainable_params for c in cells if c.variant == "full"}
    rows: dict[tuple[str, str], list[tuple[int, float, bool]]] = {}
    for c in cells:
        ref = full.get((c.dataset, c.backbone))
        total = ref or int(c.runs[0].total_params or 0)
        share = 100.0 * c.trainable_params / total if total else math.nan
        rows.setdefault((c.backbone, c.variant), []).append((c.trainable_params, share, ref is not None))
    out = []
    for b in sorted({k[0] for k in rows}):
        for v in sorted_variants([c for c in cells if c.backbone == b]):
            vals = rows[(b, v)]
            out.append(
                {
                    "backbone": b,
                    "variant": v,
                    "trainable_params": round(sum(p for p, _, _ in vals) / len(vals)),
                    "share_pct": sum(s for _, s, _ in vals) / len(vals),
                    "of": "full fine-tuning" if all(f for _, _, f in vals) else "total params",
                }
            )
    return out


def results_rows(records: list[RunRecord]) -> list[dict[str, Any]]:
    """One row per run folder (failed and broken ones too) for results.csv."""
    return [
        {
            "run": r.run,
            "status": r.status,
            "dataset": r.dataset,
            "backbone": r.backbone,
            "method": r.method,
            "variant": r.variant,
            "rank": "" if r.rank is None else r.rank,
            "seed": "" if r.seed is None else r.seed,
            "test_acc": "" if r.test_acc is None else f"{r.test_acc:.4f}",
            "test_acc_last": "" if r.test_acc_last is None else f"{r.test_acc_last:.4f}",
            "best_val_acc": "" if r.best_val_acc is None else f"{r.best_val_acc:.4f}",
            "trainable_params": "" if r.trainable_params is None else r.trainable_params,
            "total_params": "" if r.total_params is None else r.total_params,
            "train_seconds": "" if r.train_seconds is None else f"{r.train_seconds:.1f}",
            "epochs": r.protocol.get("epochs", ""),
            "input_size": "x".join(map(str, r.protocol.get("input_size", []))),
            "setup_id": r.setup_id,
            "error": r.error,
        }
        for r in records
    ]
