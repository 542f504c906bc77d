"""Training-loss statistics of one run for the init ablation: loss AUC and the divergence rule (pure).

A run's step losses come from ``metrics.jsonl`` through :func:`adaptertune.runs.folder.step_losses` (the loss
of every training step, in order). Then

- ``loss AUC`` = the mean training loss over all logged steps: the area under the step-loss curve with the
  x axis normalised to [0, 1], so runs of different lengths compare (lower = faster, steadier descent);
- ``diverged`` = the run stopped on a non-finite loss (NaN/inf), or a logged loss is non-finite, or its final
  training loss (the mean over its last epoch's steps) is above its first logged loss (the loss of the first
  step, before any update had an effect).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from ..runs import folder as rf

__all__ = ["DIVERGENCE_RULE", "LOSS_AUC_RULE", "is_diverged", "loss_auc", "loss_stats"]

LOSS_AUC_RULE = (
    "loss AUC = mean training loss over all logged steps (area under the step-loss curve, steps scaled to [0, 1])"
)
DIVERGENCE_RULE = (
    "diverged = a non-finite training loss (the run stops), or a final training loss (mean over the last epoch) "
    "above the first logged loss (the first step's)"
)


def loss_auc(losses: Sequence[float]) -> float:
    """Mean of the step losses (nan for none; non-finite when any loss is)."""
    return math.fsum(losses) / len(losses) if losses else math.nan


def is_diverged(first: float, final: float) -> bool:
    """The divergence rule on a run's first logged and final training loss (either non-finite: diverged)."""
    if not (math.isfinite(first) and math.isfinite(final)):
        return True
    return final > first


def loss_stats(history: list[dict[str, Any]]) -> tuple[float, bool] | None:
    """``(loss AUC, diverged)`` of a run from its ``metrics.jsonl`` epoch records (None: nothing logged).

    The final training loss is the last epoch's ``train_loss`` (its image-weighted mean over the epoch's steps).
    """
    losses = rf.step_losses(history)
    finals = [m["train_loss"] for m in history if "train_loss" in m]
    if not losses or not finals:
        return None
    return loss_auc(losses), is_diverged(losses[0], float(finals[-1])) or not all(map(math.isfinite, losses))
