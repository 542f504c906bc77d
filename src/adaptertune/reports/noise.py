"""Which noise each interval of a comparison counts, and the interval that counts test-set noise too.

A gain's t-interval (and its seeds-only bootstrap, :mod:`.stats`) count what the seeds vary: init and data
order, plus the training subset when the runs' config has ``data.subset_per_seed: true``, plus the fold under
cross-validation. They leave out the test images: every seed is tested on the same images, so a lucky test
set is lucky at every seed. Where both methods wrote per-image predictions at every paired seed, the paired
bootstrap over seeds and test images (:func:`.bootstrap.paired_interval`, crossed design: one image draw per
replicate shared by every seed and both methods) counts it, and the verdict of
:data:`.bootstrap.ALL_NOISE_RULE` comes from it together with the t-interval. Comparisons without predictions
keep today's columns only.

Not computed under cross-validation (each fold tests other images; the design is neither crossed nor nested).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..errors import CheckpointError
from .bootstrap import (
    ALL_NOISE_RULE,
    BootInterval,
    all_noise_verdict,
    mean_interval,
    paired_interval,
    pooled_interval,
)
from .collect import Cell
from .predictions import aligned, correct, load
from .stats import verdict

__all__ = [
    "POOLED_NOTE",
    "accuracy_interval",
    "noise_columns",
    "noise_csv",
    "noise_fields",
    "noise_rule",
    "paired_values",
    "pooled_rows",
    "seed_noise",
    "seeds_images_interval",
]

_logger = logging.getLogger(__name__)
POOLED_NOTE = (
    "pooled over K datasets, equal weight: the mean over datasets of the per-dataset paired gains; each "
    "bootstrap replicate resamples every dataset's seeds and test images independently"
)


def seed_noise(cell: Cell) -> str:
    """What a cell's replicates vary: ``seeds (init, order)``, ``seeds (init, order, subset)`` when the seeds
    also draw the training subset (``data.subset_per_seed``), with ``x folds`` under cross-validation."""
    subset = bool(cell.runs[0].setup.get("data.subset_per_seed"))
    folds = any(r.fold is not None for r in cell.runs)
    return f"seeds (init, order{', subset' if subset else ''})" + (" x folds" if folds else "")


def paired_values(variant: Cell, reference: Cell) -> tuple[list[np.ndarray], list[np.ndarray]] | str:
    """Per paired seed, the two cells' per-image correctness in points (100 x 0/1) on the test images all
    their runs share (row i: the same image at every seed and in both cells); else why not (a short note)."""
    pairs = sorted(set(variant.accs) & set(reference.accs), key=repr)
    if any(r.fold is not None for r in variant.runs + reference.runs):
        return "not computed (cross-validation: each fold tests other images)"
    runs = [{r.pair: r for r in c.runs} for c in (variant, reference)]
    missing = sum(any(m[p].predictions is None for m in runs) for p in pairs)
    if not pairs:
        return "no paired seeds"
    if missing:
        return f"no predictions at {missing} of {len(pairs)} paired seeds"
    try:
        preds = aligned([load(m[p].predictions) for m in runs for p in pairs])
    except CheckpointError as e:
        _logger.warning("no seeds + test images interval for %s vs %s: %s", variant.variant, reference.variant, e)
        return f"not computed ({e})"
    points = [100.0 * correct(p) for p in preds]
    return points[: len(pairs)], points[len(pairs) :]


def accuracy_interval(cell: Cell, seed: int = 0) -> BootInterval | str:
    """The cell's mean test accuracy (points) with its bootstrap interval over seeds and test images
    (:func:`.bootstrap.mean_interval`, the images shared by every seed), on the images all its runs have; or why
    there is none (a short note)."""
    if any(r.fold is not None for r in cell.runs):
        return "not computed (cross-validation: each fold tests other images)"
    missing = sum(r.predictions is None for r in cell.runs)
    if missing:
        return f"no predictions at {missing} of {len(cell.runs)} seeds"
    try:
        preds = aligned([load(r.predictions) for r in cell.runs])
    except CheckpointError as e:
        _logger.warning("no seeds + test images interval for %s: %s", cell.variant, e)
        return f"not computed ({e})"
    return mean_interval([100.0 * correct(p) for p in preds], images="shared", seed=seed)


def seeds_images_interval(variant: Cell, reference: Cell, seed: int = 0) -> BootInterval | str:
    """The paired bootstrap interval of ``variant - reference`` (points) over seeds and test images, or why
    there is none."""
    values = paired_values(variant, reference)
    if isinstance(values, str):
        return values
    return paired_interval(*values, images="shared", seed=seed)


def noise_fields(variant: Cell, reference: Cell, t_ci: tuple[float, float]) -> dict[str, Any]:
    """The Gain fields of :mod:`.tables` this module fills: ``noise`` (what the t-interval counts),
    ``all_noise`` (the seeds + test-images interval, nan without one), ``all_noise_verdict`` (``""``
    without one) and ``all_noise_note`` (what it counts, or why it is missing)."""
    iv = seeds_images_interval(variant, reference)
    noise = seed_noise(variant)
    if isinstance(iv, str):
        return {"noise": noise, "all_noise_note": iv}
    return {
        "noise": noise,
        "all_noise": (iv.low, iv.high),
        "all_noise_verdict": all_noise_verdict(*t_ci, iv.low, iv.high),
        "all_noise_note": f"{noise} + {iv.n_images} test images",
    }


def _has(g: Any) -> bool:
    return not math.isnan(g.all_noise[0])


def _interval(lo: float, hi: float) -> str:
    return "-" if math.isnan(lo) or math.isinf(lo) else f"[{lo:+.2f}, {hi:+.2f}]"


def noise_columns(gs: Sequence[Any]) -> dict[str, list[str]]:
    """The gains table's extra Markdown columns (header: cells, one per gain); none when no gain has a seeds +
    test-images interval, so results without predictions keep today's table."""
    if not any(_has(g) for g in gs):
        return {}
    return {
        "95% CI (seeds + images)": [_interval(*g.all_noise) for g in gs],
        "verdict (seeds + images)": [g.all_noise_verdict or "-" for g in gs],
        "t-interval counts": [g.noise for g in gs],
        "seeds + images counts": [g.all_noise_note if _has(g) else f"- ({g.all_noise_note})" for g in gs],
    }


def noise_rule(gs: Sequence[Any]) -> str:
    """:data:`.bootstrap.ALL_NOISE_RULE` where a gain has the interval, else ``""``."""
    return ALL_NOISE_RULE if any(_has(g) for g in gs) else ""


def noise_csv(gs: Sequence[Any], rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """gains.csv rows with the noise columns added, when a gain has a seeds + test-images interval."""
    if not any(_has(g) for g in gs):
        return rows

    def num(x: float) -> str:
        return "" if math.isnan(x) or math.isinf(x) else f"{x:.4f}"

    return [
        row
        | {
            "noise": g.noise,
            "all_noise_low": num(g.all_noise[0]),
            "all_noise_high": num(g.all_noise[1]),
            "all_noise_verdict": g.all_noise_verdict,
            "all_noise_covers": g.all_noise_note,
        }
        for g, row in zip(gs, rows, strict=True)
    ]


def pooled_rows(gs: Sequence[Any], cells: list[Cell], seed: int = 0) -> list[dict[str, Any]]:
    """pooled.csv: per (backbone, variant, reference) compared on 2 or more datasets, each with predictions at
    every paired seed, the equal-weight mean gain over those datasets with its bootstrap interval (seeds and
    test images of each dataset resampled independently) and the verdict of that interval alone."""
    by_key = {(c.dataset, c.backbone, c.variant): c for c in cells}
    groups: dict[tuple[str, str, str], list[Any]] = {}
    for g in gs:
        if _has(g):
            groups.setdefault((g.backbone, g.variant, g.baseline), []).append(g)
    rows = []
    for (backbone, variant, reference), sel in groups.items():
        if len(sel) < 2:
            continue
        diffs = []
        for g in sel:
            a, b = paired_values(by_key[(g.dataset, backbone, variant)], by_key[(g.dataset, backbone, reference)])
            diffs.append([x - y for x, y in zip(a, b, strict=True)])
        iv = pooled_interval(diffs, seed=seed)
        rows.append(
            {
                "backbone": backbone,
                "variant": variant,
                "reference": reference,
                "datasets": " ".join(g.dataset for g in sel),
                "k": len(sel),
                "mean_diff": f"{iv.mean:.4f}",
                "low": f"{iv.low:.4f}" if not math.isnan(iv.low) else "",
                "high": f"{iv.high:.4f}" if not math.isnan(iv.high) else "",
                "verdict": "tie" if math.isnan(iv.low) else verdict(iv.low, iv.high),
                "covers": f"{POOLED_NOTE.replace('K', str(len(sel)), 1)}; {sel[0].noise} + test images",
            }
        )
    return rows
