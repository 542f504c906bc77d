"""The report's per-image section: the rows of ``agreement.csv``, ``ensemble.csv`` and ``pooled.csv``
(:mod:`.agreement`, :mod:`.noise`) as short Markdown tables, each with its rule beside the numbers (pure)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .noise import POOLED_NOTE

__all__ = [
    "AGREEMENT_NOTE",
    "ENSEMBLE_NOTE",
    "MATRIX_MAX",
    "POOLED_RULE",
    "TOP_PAIRS",
    "agreement_markdown",
    "ensemble_markdown",
    "per_image_markdown",
    "pooled_markdown",
]

MATRIX_MAX = 8  # up to this many variants a pair's disagreements are a matrix; more: the top and bottom pairs
TOP_PAIRS = 5
AGREEMENT_NOTE = (
    "Disagreement: the % of test images on which two methods' top-1 predictions differ (right or wrong), mean "
    "over the seeds both ran, on the images every compared run has. Low: the two learned nearly the same "
    "function; high: an ensemble of the two may gain."
)
ENSEMBLE_NOTE = (
    "Ensemble of the top k: the k methods with the best mean validation accuracy (chosen on validation, never "
    "test); at each seed the argmax of their mean softmax, then the mean over the seeds all members ran. Top "
    "member: the first of them (best by validation) alone, on the same seeds and images; gain = ensemble - top "
    "member, in points. Best member on test: the member with the best test accuracy alone, for comparison only "
    "(picking it needs the test set)."
)
POOLED_RULE = "Verdict of this interval alone: win when its 95% interval lies above 0, loss when below, tie otherwise."


def _pairs(rows: list[dict[str, Any]]) -> dict[tuple[str, str], list[dict[str, Any]]]:
    out: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in rows:
        out.setdefault((r["dataset"], r["backbone"]), []).append(r)
    return out


def _span(values: list[Any]) -> str:
    lo, hi = min(map(int, values)), max(map(int, values))
    return str(lo) if lo == hi else f"{lo}-{hi}"


def agreement_markdown(rows: list[dict[str, Any]]) -> str:
    """Per (dataset, backbone): the disagreement matrix (lower triangle, %) up to :data:`MATRIX_MAX` variants,
    else the :data:`TOP_PAIRS` most and least disagreeing pairs; then :data:`AGREEMENT_NOTE`."""
    out = []
    for (dataset, backbone), mine in _pairs(rows).items():
        seeds, images = _span([r["n_seeds"] for r in mine]), _span([r["n_images"] for r in mine])
        out += [f"**{dataset} / {backbone}** ({seeds} seeds, {images} test images)", ""]
        variants = list(dict.fromkeys(v for r in mine for v in (r["variant_a"], r["variant_b"])))
        value = {frozenset((r["variant_a"], r["variant_b"])): r["disagreement_pct"] for r in mine}
        if len(variants) <= MATRIX_MAX:
            out += ["| disagreement % | " + " | ".join(variants[:-1]) + " |", "|---|" + "---:|" * (len(variants) - 1)]
            for i, a in enumerate(variants[1:], 1):
                cells = [value.get(frozenset((a, b)), "-") for b in variants[:i]] + [""] * (len(variants) - 1 - i)
                out.append(f"| {a} | " + " | ".join(cells) + " |")
        else:
            ranked = sorted(mine, key=lambda r: (-float(r["disagreement_pct"]), r["variant_a"], r["variant_b"]))
            out += ["| pair | disagreement % |", "|---|---:|"]
            shown = ranked[:TOP_PAIRS] + [None] + ranked[-TOP_PAIRS:] if len(ranked) > 2 * TOP_PAIRS else ranked
            for r in shown:
                out.append(
                    "| ... | |" if r is None else f"| {r['variant_a']} vs {r['variant_b']} | {r['disagreement_pct']} |"
                )
            if len(ranked) > 2 * TOP_PAIRS:
                out += [
                    "",
                    f"The {TOP_PAIRS} most and {TOP_PAIRS} least disagreeing of {len(ranked)} pairs "
                    "(all in agreement.csv).",
                ]
        out.append("")
    return "\n".join(out + [AGREEMENT_NOTE]) + "\n"


def ensemble_markdown(rows: list[dict[str, Any]]) -> str:
    """One row per (dataset, backbone, k): the members, the ensemble's accuracy against its top member's; then
    :data:`ENSEMBLE_NOTE`."""
    out = [
        "| dataset | backbone | k | members (best by validation first) | ensemble % | top member % | gain "
        "| best member on test % | seeds | images |",
        "|---|---|---:|---|---:|---:|---:|---|---:|---:|",
    ]
    out += [
        f"| {r['dataset']} | {r['backbone']} | {r['k']} | {r['members']} | {r['ensemble_acc']} "
        f"| {r['top_member_acc']} | {r['gain']} | {r['best_member_acc']} ({r['best_member']}) | {r['n_seeds']} "
        f"| {r['n_images']} |"
        for r in rows
    ]
    return "\n".join(out) + "\n\n" + ENSEMBLE_NOTE + "\n"


def _interval(r: Mapping[str, Any]) -> str:
    return f"[{float(r['low']):+.2f}, {float(r['high']):+.2f}]" if r["low"] != "" else "- (fewer than 2 seeds)"


def pooled_markdown(rows: list[dict[str, Any]]) -> str:
    """One row per (backbone, variant, reference) compared on 2 or more datasets: the equal-weight mean gain over
    them with its interval and verdict; then what the interval covers and :data:`POOLED_RULE`."""
    out = [
        "| backbone | variant | vs | datasets | mean gain (points) | 95% CI | verdict | noise counted |",
        "|---|---|---|---|---:|---|---|---|",
    ]
    for r in rows:
        noise = r["covers"].rsplit("; ", 1)[-1]
        out.append(
            f"| {r['backbone']} | {r['variant']} | {r['reference']} | {r['datasets'].replace(' ', ', ')} "
            f"| {float(r['mean_diff']):+.2f} | {_interval(r)} | {r['verdict']} | {noise} |"
        )
    note = POOLED_NOTE.replace("pooled over K datasets", "Pooled over the datasets listed", 1)
    return "\n".join(out) + f"\n\n{note}. {POOLED_RULE}\n"


def per_image_markdown(tables: Mapping[str, list[dict[str, Any]]]) -> str:
    """The section from :func:`.agreement.prediction_tables`' rows (``""`` when there are none)."""
    parts = []
    for name, title, render in (
        ("agreement.csv", "How often two methods disagree", agreement_markdown),
        ("ensemble.csv", "Ensembles of the top methods", ensemble_markdown),
        ("pooled.csv", "Gains pooled over datasets", pooled_markdown),
    ):
        if tables.get(name):
            parts.append(f"### {title}\n\n" + render(tables[name]) + f"\nAll rows: {name}.")
    return "\n\n".join(parts) + ("\n" if parts else "")
