"""How often two methods disagree on a test image, and what an ensemble of the top methods scores.

From the runs' per-image predictions (:mod:`.predictions`), at each paired seed, on the test images every
compared run has:

- disagreement of A and B: the share of images whose top-1 predictions differ (not whether either is right),
  averaged over the seeds both ran. Two methods at 80% may disagree on 5% of images or on 30%: the first pair
  learned the same function, the second could gain from an ensemble (Mai et al. ask this of PEFT methods).
- ensemble accuracy of a set of methods: at each seed, the mean of their softmax rows, its argmax against the
  label; then the mean over the seeds all members ran.
- top-k ensemble: the k methods with the best mean VALIDATION accuracy (never test: choosing members on test
  would flatter the ensemble), ensembled.

The first functions are pure (arrays in, numbers out); :func:`agreement_rows` and :func:`ensemble_rows` read
a report's cells.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np

from ..errors import AdapterTuneError, CheckpointError
from ..runs.predictions import Predictions
from .collect import Cell
from .noise import pooled_rows
from .predictions import aligned, correct, load
from .tables import comparable, sorted_variants

__all__ = [
    "ENSEMBLE_KS",
    "agreement_rows",
    "disagreement",
    "disagreement_matrix",
    "ensemble_accuracy",
    "ensemble_over_seeds",
    "ensemble_rows",
    "prediction_tables",
    "top_k",
]

ENSEMBLE_KS = (2, 3)
_logger = logging.getLogger(__name__)


def disagreement(pred_a: np.ndarray, pred_b: np.ndarray) -> float:
    """Share (0..1) of images whose top-1 predictions differ; the arrays are aligned on the same images."""
    a, b = np.asarray(pred_a), np.asarray(pred_b)
    if a.shape != b.shape or a.size == 0:
        raise AdapterTuneError(
            f"Disagreement needs two aligned, non-empty prediction arrays; got {a.shape} and {b.shape}."
        )
    return float(np.mean(a != b))


def disagreement_matrix(
    preds: Mapping[str, Mapping[Hashable, np.ndarray]],
) -> dict[tuple[str, str], tuple[float, int]]:
    """``{(a, b): (mean disagreement over the seeds both have, seeds)}`` for every pair of methods, in the
    order given; ``preds[method][seed]`` are top-1 arrays aligned on the same images at each seed. A pair
    with no shared seed is left out."""
    out = {}
    for a, b in itertools.combinations(preds, 2):
        seeds = [s for s in preds[a] if s in preds[b]]
        if seeds:
            out[(a, b)] = (float(np.mean([disagreement(preds[a][s], preds[b][s]) for s in seeds])), len(seeds))
    return out


def ensemble_accuracy(probs: Sequence[np.ndarray], label: np.ndarray) -> float:
    """Share (0..1) of images where the argmax of the members' mean probability row is the label."""
    if not probs:
        raise AdapterTuneError("An ensemble needs at least one member.")
    mean = np.mean([np.asarray(p, dtype=np.float32) for p in probs], axis=0)
    return float(np.mean(mean.argmax(1) == np.asarray(label)))


def ensemble_over_seeds(
    probs: Mapping[str, Mapping[Hashable, np.ndarray]], labels: Mapping[Hashable, np.ndarray], members: Sequence[str]
) -> tuple[float, int]:
    """(mean over the seeds every member has of the ensemble accuracy at that seed, seeds); nan and 0 with no
    shared seed. ``probs[method][seed]`` are (N, C) rows aligned with ``labels[seed]``."""
    seeds = [s for s in labels if all(s in probs[m] for m in members)]
    if not seeds:
        return float("nan"), 0
    return float(np.mean([ensemble_accuracy([probs[m][s] for m in members], labels[s]) for s in seeds])), len(seeds)


def top_k(val_acc: Mapping[str, float], k: int) -> list[str]:
    """The ``k`` methods with the highest validation accuracy, best first (ties by name)."""
    if not 1 <= k <= len(val_acc):
        raise AdapterTuneError(f"top_k needs 1 <= k <= {len(val_acc)} (the methods ranked), got k={k}.")
    return sorted(val_acc, key=lambda m: (-val_acc[m], m))[:k]


def _groups(cells: list[Cell]) -> list[list[Cell]]:
    """The cells whose seeds can be paired: same dataset, backbone and split; those with predictions only."""
    groups: dict[tuple[str, str], list[list[Cell]]] = {}
    for c in cells:
        if not any(r.predictions is not None for r in c.runs):
            continue
        bucket = groups.setdefault((c.dataset, c.backbone), [])
        home = next((g for g in bucket if comparable(g[0], c)), None)
        home.append(c) if home is not None else bucket.append([c])
    order = {v: i for i, v in enumerate(sorted_variants(cells))}
    return [sorted(g, key=lambda c: order[c.variant]) for _, bucket in sorted(groups.items()) for g in bucket]


def _by_seed(group: list[Cell]) -> tuple[dict[str, dict[Hashable, Predictions]], dict[Hashable, int]]:
    """Per variant, per seed, the predictions aligned on the images all the group's runs at that seed have;
    and the image count per seed."""
    runs: dict[Hashable, dict[str, Any]] = {}
    for c in group:
        for r in c.runs:
            if r.predictions is not None:
                runs.setdefault(r.pair, {})[c.variant] = r.predictions
    out: dict[str, dict[Hashable, Predictions]] = {c.variant: {} for c in group}
    sizes = {}
    for pair, paths in runs.items():
        if len(paths) < 2:
            continue
        try:
            preds = aligned([load(p) for p in paths.values()])
        except CheckpointError as e:  # a broken file or another split: that seed is left out, and said so
            _logger.warning("seed %s of %s left out of agreement and ensembles: %s", pair, group[0].dataset, e)
            continue
        for variant, p in zip(paths, preds, strict=True):
            out[variant][pair] = p
        sizes[pair] = len(preds[0].index)
    return out, sizes


def agreement_rows(cells: list[Cell]) -> list[dict[str, Any]]:
    """agreement.csv: per (dataset, backbone), each pair of variants with predictions at shared seeds: their
    disagreement (% of test images with different top-1), averaged over those seeds."""
    rows = []
    for group in _groups(cells):
        preds, sizes = _by_seed(group)
        matrix = disagreement_matrix({v: {s: p.pred for s, p in by.items()} for v, by in preds.items()})
        for (a, b), (value, n) in matrix.items():
            seeds = [s for s in preds[a] if s in preds[b]]
            rows.append(
                {
                    "dataset": group[0].dataset,
                    "backbone": group[0].backbone,
                    "variant_a": a,
                    "variant_b": b,
                    "disagreement_pct": f"{100 * value:.2f}",
                    "n_seeds": n,
                    "n_images": min(sizes[s] for s in seeds),
                }
            )
    return rows


def _val_acc(c: Cell) -> float | None:
    vals = [r.best_val_acc for r in c.runs]
    return None if not vals or any(v is None for v in vals) else float(np.mean(vals))


def ensemble_rows(cells: list[Cell], ks: Sequence[int] = ENSEMBLE_KS) -> list[dict[str, Any]]:
    """ensemble.csv: per (dataset, backbone) and k, the top-k variants by mean validation accuracy (among
    those with predictions and a validation split) ensembled, beside the top one alone and the member best on
    test alone (a comparison, not a choice), on the same seeds and images (accuracy in %)."""
    rows = []
    for group in _groups(cells):
        preds, sizes = _by_seed(group)
        ranked = {c.variant: v for c in group if (v := _val_acc(c)) is not None and preds[c.variant]}
        probs = {v: {s: p.prob for s, p in by.items()} for v, by in preds.items()}
        labels = {s: p.label for by in preds.values() for s, p in by.items()}
        for k in ks:
            if k > len(ranked):
                continue
            members = top_k(ranked, k)
            acc, n = ensemble_over_seeds(probs, labels, members)
            if n == 0:
                continue
            seeds = [s for s in labels if all(s in probs[m] for m in members)]
            single = {m: float(np.mean([correct(preds[m][s]).mean() for s in seeds])) for m in members}
            alone, best = single[members[0]], max(members, key=lambda m: (single[m], -members.index(m)))
            rows.append(
                {
                    "dataset": group[0].dataset,
                    "backbone": group[0].backbone,
                    "k": k,
                    "members": " + ".join(members),
                    "chosen_by": "validation accuracy (mean over seeds)",
                    "ensemble_acc": f"{100 * acc:.2f}",
                    "top_member_acc": f"{100 * alone:.2f}",
                    "gain": f"{100 * (acc - alone):+.2f}",
                    "best_member": best,  # on test, for comparison only: the members were chosen on validation
                    "best_member_acc": f"{100 * single[best]:.2f}",
                    "n_seeds": n,
                    "n_images": min(sizes[s] for s in seeds),
                }
            )
    return rows


def prediction_tables(cells: list[Cell], gs: Sequence[Any]) -> dict[str, list[dict[str, Any]]]:
    """The report's per-image tables that have rows: ``agreement.csv``, ``ensemble.csv`` and ``pooled.csv``
    (:func:`.noise.pooled_rows`, from the gains ``gs``); none when no run wrote predictions."""
    tables = {
        "agreement.csv": agreement_rows(cells),
        "ensemble.csv": ensemble_rows(cells),
        "pooled.csv": pooled_rows(gs, cells),
    }
    return {name: rows for name, rows in tables.items() if rows}
