"""Tables from aggregated cells: the paper-style accuracy table (Markdown, LaTeX, HTML), gains, parameter shares.

All functions are pure: cells in, text or rows out.
"""

from __future__ import annotations

import html
import logging
import math
from dataclasses import dataclass
from typing import Any

from ..runs.summary import RunStatus
from .bootstrap import ALL_NOISE_RULE
from .collect import Cell, RunRecord, budget_note
from .noise import noise_columns, noise_csv, noise_fields, noise_rule
from .stats import CAP_RULE, VERDICTS, WIN_RULE, paired_comparison
from .tuning_table import lr_selection

__all__ = [
    "REFERENCES",
    "Gain",
    "comparable",
    "compared_unit",
    "comparison_title",
    "gains",
    "gains_markdown",
    "gains_rows",
    "gains_summary",
    "html_table",
    "interval_text",
    "latex_table",
    "markdown_table",
    "paired_gain",
    "param_shares",
    "replicates",
    "results_rows",
    "sorted_variants",
]

_logger = logging.getLogger(__name__)


def sorted_variants(cells: list[Cell]) -> list[str]:
    """head (and the cached linear probe), full, then adapter-style variants by method, rank and label."""
    order = {"head": 0, "linear-probe-cached": 0, "full": 1}
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


def replicates(cells: list[Cell]) -> str:
    """What a cell's runs replicate over: ``seeds``, ``folds`` (cross-validation, one seed) or ``(seed, fold)
    pairs``."""
    runs = [r for c in cells for r in c.runs]
    if all(r.fold is None for r in runs):
        return "seeds"
    if all(r.fold is not None for r in runs):
        return "folds" if len({r.seed for r in runs}) == 1 else "(seed, fold) pairs"
    return "seeds (folds for cross-validated cells)"


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
    unit = replicates(cells)
    if len(counts) == 1:
        out.append(f"Top-1 test accuracy (%), mean ± std over {counts.pop()} {unit}; best per row in bold.")
    else:
        out.append(f"Top-1 test accuracy (%), mean ± std over {unit} (n per cell); best per row in bold.")
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


# Baselines every other variant is compared with, and how the summary names them.
REFERENCES = {"head": "head-only", "linear-probe-cached": "the cached linear probe", "full": "full fine-tuning"}
# Protocol fields that must match for two cells' seeds to be paired (same images at each seed).
_SPLIT_KEYS = ("split_seed", "subset", "test_subset", "val_fraction", "val_subset", "cv_folds")


@dataclass
class Gain:
    """A variant against a reference (head, cached linear probe or full) on one (dataset, backbone) pair.

    ``delta`` and the intervals are over the paired seeds (see :mod:`adaptertune.reports.stats`).
    """

    dataset: str
    backbone: str
    variant: str
    baseline: str
    delta: float  # paired mean difference, top-1 points
    seeds_won: int  # paired seeds where the variant beats the baseline
    seeds_shared: int  # paired seeds (n)
    seeds_unpaired: int = 0  # seeds only one of the two ran (left out)
    ci: tuple[float, float] = (-math.inf, math.inf)  # 95% t-interval of delta
    boot: tuple[float, float] = (math.nan, math.nan)  # 95% percentile bootstrap (n >= 5)
    verdict: str = "tie"
    noise: str = ""  # what the t-interval (and bootstrap) count (reports/noise.py)
    all_noise: tuple[float, float] = (math.nan, math.nan)  # 95% paired bootstrap over seeds and test images
    all_noise_verdict: str = ""  # from all_noise and ci (bootstrap.ALL_NOISE_RULE); "" without predictions
    all_noise_note: str = ""  # what all_noise counts, or why it is missing
    budget_note: str = ""  # which cells had runs at their epoch cap (collect.budget_note), "" when none

    @property
    def wins(self) -> bool:
        return self.verdict == "win"

    @property
    def final_verdict(self) -> str:
        """The verdict the report states: seeds + test images (with t) where predictions exist, else t."""
        return self.all_noise_verdict or self.verdict


def _split(c: Cell) -> tuple[Any, ...]:
    return tuple(c.runs[0].protocol.get(k) for k in _SPLIT_KEYS)


def comparable(a: Cell, b: Cell) -> bool:
    """Whether two cells' replicates are paired: the same split protocol (split seed, subsets, validation, folds)."""
    return _split(a) == _split(b)


def paired_gain(variant: Cell, reference: Cell, baseline: str | None = None) -> Gain:
    """``variant`` against ``reference`` over their paired replicates (seeds, or (seed, fold) under CV);
    ``baseline`` names the reference in the Gain (default: its variant label)."""
    p = paired_comparison(variant.accs, reference.accs)
    return Gain(
        variant.dataset,
        variant.backbone,
        variant.variant,
        baseline or reference.variant,
        p.mean_diff,
        p.seeds_won,
        p.n,
        p.n_unpaired,
        (p.ci_low, p.ci_high),
        (p.boot_low, p.boot_high),
        p.verdict,
        **noise_fields(variant, reference, (p.ci_low, p.ci_high)),
        budget_note=budget_note(variant, reference),
    )


def gains(cells: list[Cell]) -> list[Gain]:
    """Every non-reference variant against each reference on each pair that has it, over paired seeds.

    A reference whose split protocol (split seed, subsets, validation) differs from the variant's is not
    compared: its seeds saw other images, so they are not paired.
    """
    by_pair: dict[tuple[str, str], dict[str, Cell]] = {}
    for c in cells:
        by_pair.setdefault((c.dataset, c.backbone), {})[c.variant] = c
    out = []
    for (d, b), variants in sorted(by_pair.items()):
        for v in sorted_variants(list(variants.values())):
            if v in REFERENCES:
                continue
            for base in REFERENCES:
                if base not in variants:
                    continue
                if not comparable(variants[v], variants[base]):
                    _logger.warning("not comparing %s with %s on (%s, %s): different splits", v, base, d, b)
                    continue
                out.append(paired_gain(variants[v], variants[base], base))
    return out


def compared_unit(n: int, one_backbone: bool) -> str:
    """What a verdict count counts: ``datasets`` (one backbone), else ``dataset x backbone pairs``."""
    if one_backbone:
        return "dataset" if n == 1 else "datasets"
    return "dataset x backbone pair" if n == 1 else "dataset x backbone pairs"


def gains_summary(gs: list[Gain], rule: bool = True) -> list[str]:
    """One line per (variant, reference): the datasets (or dataset x backbone pairs) won / tied / lost by the
    stated verdict (:attr:`Gain.final_verdict`), mean gain, paired seeds won, and per pair its intervals and
    whether a run of either cell was budget-limited; then (``rule``) the lines stating the verdict rules."""
    lines = []
    first = list(dict.fromkeys((g.variant, g.baseline) for g in gs))  # the table's variant order
    refs = list(REFERENCES)
    keys = sorted(first, key=lambda k: (refs.index(k[1]), first.index(k)))
    for variant, base in keys:
        sel = [g for g in gs if g.variant == variant and g.baseline == base]
        deltas = [g.delta for g in sel if not math.isnan(g.delta)]
        mean = sum(deltas) / len(deltas) if deltas else math.nan
        seeds = sum(g.seeds_won for g in sel), sum(g.seeds_shared for g in sel)
        count = {v: sum(g.final_verdict == v for g in sel) for v in VERDICTS}
        one_backbone = len({g.backbone for g in sel}) == 1
        per_pair = "; ".join(
            f"{g.dataset if one_backbone else f'{g.dataset}/{g.backbone}'} {g.final_verdict}: "
            f"n={g.seeds_shared}, 95% CI {interval_text(*g.ci)}"
            + (f" (t), {interval_text(*g.all_noise)} (seeds + images)" if g.all_noise_verdict else "")
            + (f" [{g.budget_note}]" if g.budget_note else "")
            for g in sel
        )
        what = compared_unit(len(sel), one_backbone)
        limited = sum(bool(g.budget_note) for g in sel)
        lines.append(
            f"{variant} beats {REFERENCES[base]} on {count['win']}/{len(sel)} {what} (ties {count['tie']}, "
            f"losses {count['loss']}; mean gain {mean:+.2f} points; {seeds[0]}/{seeds[1]} paired seeds won"
            + (f"; budget-limited on {limited}" if limited else "")
            + f"); {per_pair}"
        )
    if rule and lines:
        lines.append(WIN_RULE)
        lines += [ALL_NOISE_RULE] if any(g.all_noise_verdict for g in gs) else []
        lines += [CAP_RULE] if any(g.budget_note for g in gs) else []
    return lines


def comparison_title(gs: list[Gain]) -> str:
    """``Variants vs head-only and full fine-tuning``, naming only the references that were compared."""
    names = [REFERENCES[r] for r in REFERENCES if any(g.baseline == r for g in gs)]
    return "Variants vs " + (", ".join(names[:-1]) + " and " + names[-1] if len(names) > 1 else names[0])


def interval_text(lo: float, hi: float) -> str:
    """``[+1.20, +3.40]``, or ``-`` where no interval could be formed."""
    return "-" if math.isnan(lo) or math.isinf(lo) else f"[{lo:+.2f}, {hi:+.2f}]"


def gains_markdown(gs: list[Gain]) -> str:
    if not gs:
        return "No pair has both a reference (head, linear-probe-cached, full) and another variant.\n"
    extra = noise_columns(gs)  # seeds + test-images columns, only where predictions exist
    rows = [
        "| dataset | backbone | variant | vs | gain (points) | 95% CI (t) | 95% CI (bootstrap) | verdict "
        "| seeds won | paired seeds |" + "".join(f" {h} |" for h in extra),
        "|---|---|---|---|---:|---:|---:|---|---:|---:|" + "---|" * len(extra),
    ]
    rows += [
        f"| {g.dataset} | {g.backbone} | {g.variant} | {g.baseline} | {g.delta:+.2f} | {interval_text(*g.ci)} "
        f"| {interval_text(*g.boot)} | {g.verdict} | {g.seeds_won}/{g.seeds_shared} | {g.seeds_shared}"
        + (f" (+{g.seeds_unpaired} unpaired)" if g.seeds_unpaired else "")
        + " |"
        + "".join(f" {col[i]} |" for col in extra.values())
        for i, g in enumerate(gs)
    ]
    summary = gains_summary(gs, rule=False)
    rules = "\n\n".join(r for r in (WIN_RULE, noise_rule(gs)) if r)
    return "\n".join(rows) + "\n\n" + "\n".join(f"- {line}" for line in summary) + f"\n\n{rules}\n"


def gains_rows(gs: list[Gain]) -> list[dict[str, Any]]:
    """One row per comparison for gains.csv (intervals empty where they cannot be formed)."""

    def num(x: float) -> str:
        return "" if math.isnan(x) or math.isinf(x) else f"{x:.4f}"

    rows = [
        {
            "dataset": g.dataset,
            "backbone": g.backbone,
            "variant": g.variant,
            "reference": g.baseline,
            "n": g.seeds_shared,
            "n_unpaired": g.seeds_unpaired,
            "mean_diff": num(g.delta),
            "ci_low": num(g.ci[0]),
            "ci_high": num(g.ci[1]),
            "boot_low": num(g.boot[0]),
            "boot_high": num(g.boot[1]),
            "seeds_won": g.seeds_won,
            "verdict": g.verdict,
        }
        for g in gs
    ]
    return noise_csv(gs, rows)  # + the seeds + test-images columns where predictions exist


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
            "cv_fold": "" if r.fold is None else r.fold,
            "loss_auc": "" if r.loss_auc is None else f"{r.loss_auc:.4f}",  # reports/loss_curve.py rules
            "diverged": "" if r.diverged is None else int(r.diverged),
            "lr": "" if r.lr is None else f"{r.lr:g}",
            "lr_selection": lr_selection(r.tuning) if r.status is RunStatus.SUCCESS else "",
            "epochs": r.protocol.get("epochs", ""),
            "input_size": "x".join(map(str, r.protocol.get("input_size", []))),
            "setup_id": r.setup_id,
            "error": r.error,
        }
        for r in records
    ]
