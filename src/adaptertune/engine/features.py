"""Frozen-backbone features, computed once, and loaders over them (for head-only training on a tensor)."""

from __future__ import annotations

import time
from collections.abc import Iterable

import torch
from torch import nn

from .loop import autocast_context
from .sampling import ResumableSampler

__all__ = ["FeatureHead", "extract_features", "feature_loader"]


@torch.no_grad()
def extract_features(
    model: nn.Module, loader: Iterable, device: torch.device, precision: str = "fp32"
) -> tuple[torch.Tensor, torch.Tensor, int, float]:
    """Pre-logit features of a timm model over ``loader``: (features (N, D) fp32 on CPU, labels, skipped, seconds).

    Features are ``forward_head(forward_features(x), pre_logits=True)``: the input of the classifier.
    """
    model.eval().to(device)
    feats, labels, skipped = [], [], 0
    t0 = time.perf_counter()
    for batch in loader:
        skipped += batch[2] if len(batch) > 2 else 0
        if batch[1].numel() == 0:
            continue
        with autocast_context(precision, device):
            f = model.forward_head(model.forward_features(batch[0].to(device)), pre_logits=True)
        feats.append(f.float().cpu())
        labels.append(batch[1])
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    width = getattr(model, "num_features", 0)
    x = torch.cat(feats) if feats else torch.empty(0, width)
    y = torch.cat(labels) if labels else torch.empty(0, dtype=torch.long)
    return x, y, skipped, time.perf_counter() - t0


class FeatureHead(nn.Module):
    """The model's classifier alone (shared parameters): features (B, D) -> logits (B, C)."""

    def __init__(self, head: nn.Module) -> None:
        super().__init__()
        self.head = head

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        return self.head(f)


class _EpochKeyed(torch.utils.data.Dataset):
    """Item ``(epoch, i)``, as :class:`ResumableSampler` yields keys, is item ``i`` (no per-epoch draw)."""

    def __init__(self, dataset: torch.utils.data.Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]):
        return self.dataset[key[1]]


def feature_loader(
    features: torch.Tensor, labels: torch.Tensor, batch_size: int, shuffle: bool = False, seed: int = 0
) -> torch.utils.data.DataLoader:
    """Batches of (features, labels); with ``shuffle``, the order of epoch e is the image loader's (seed, e) order.

    The same :class:`ResumableSampler` as the image loader draws the order, so a probe on cached features sees
    the batches head-only training sees at the same seed, epoch by epoch, and resumes inside an epoch exactly.
    """
    data = torch.utils.data.TensorDataset(features, labels)
    if not shuffle:
        return torch.utils.data.DataLoader(data, batch_size=batch_size)
    return torch.utils.data.DataLoader(
        _EpochKeyed(data), batch_size=batch_size, sampler=ResumableSampler(len(data), seed, batch_size)
    )
