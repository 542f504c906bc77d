"""Pure metric helpers."""

from __future__ import annotations

import torch

__all__ = ["topk_correct", "topk_hits"]


def topk_hits(logits: torch.Tensor, targets: torch.Tensor, ks: tuple[int, ...] = (1, 5)) -> torch.Tensor:
    """(len(ks),) int64 tensor on the logits' device: samples whose target is among the top-k logits, for
    each k (k capped at #classes). No host sync: accumulate it and read it once."""
    maxk = min(max(ks), logits.shape[1])
    pred = logits.topk(maxk, dim=1).indices  # (B, maxk)
    hit = pred.eq(targets[:, None])
    return torch.stack([hit[:, : min(k, maxk)].any(dim=1).sum() for k in ks])


def topk_correct(logits: torch.Tensor, targets: torch.Tensor, ks: tuple[int, ...] = (1, 5)) -> list[int]:
    """Number of samples whose target is among the top-k logits, for each k (k capped at #classes)."""
    return topk_hits(logits, targets, ks).tolist()
