"""Pure metric helpers."""

from __future__ import annotations

import torch

__all__ = ["topk_correct"]


def topk_correct(logits: torch.Tensor, targets: torch.Tensor, ks: tuple[int, ...] = (1, 5)) -> list[int]:
    """Number of samples whose target is among the top-k logits, for each k (k capped at #classes)."""
    maxk = min(max(ks), logits.shape[1])
    pred = logits.topk(maxk, dim=1).indices  # (B, maxk)
    hit = pred.eq(targets[:, None])
    return [int(hit[:, : min(k, maxk)].any(dim=1).sum()) for k in ks]
