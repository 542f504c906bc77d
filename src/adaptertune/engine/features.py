"""Frozen-backbone features, computed once, and loaders over them (for head-only training on a tensor).

Head-only training on cached features is head-only training on images without augmentation, step for step,
when three things hold, and this module provides them: the feature loader draws the image loader's seeded
order (same :class:`ResumableSampler`, same shard per rank, its own generator so neither moves the global
RNG); the classifier sees the model's own dropout before it (``head_drop``: same masks from the same RNG
stream); and nothing else in the backbone behaves differently in training mode (:func:`train_mode_layers`
lists what would: dropout, drop-path, batch norm), since features are computed once in eval mode.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

import torch
from torch import nn

from .loop import autocast_context
from .sampling import ResumableSampler, ShardedEvalSampler

__all__ = ["FeatureHead", "extract_features", "feature_loader", "train_mode_layers"]


@torch.no_grad()
def run_frozen(
    model: nn.Module, fn, loader: Iterable, device: torch.device, precision: str = "fp32"
) -> tuple[list[torch.Tensor], list[torch.Tensor], int, float]:
    """``fn(x)`` of every labelled batch of ``loader`` with ``model`` in eval mode on ``device``, under autocast.

    Returns (outputs, labels (on the loader's device), skipped images, seconds, synchronised on CUDA).
    """
    model.eval().to(device)
    outs, labels, skipped = [], [], 0
    t0 = time.perf_counter()
    for batch in loader:
        skipped += batch[2] if len(batch) > 2 else 0
        if batch[1].numel() == 0:
            continue
        with autocast_context(precision, device):
            outs.append(fn(batch[0].to(device)))
        labels.append(batch[1])
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return outs, labels, skipped, time.perf_counter() - t0


def extract_features(
    model: nn.Module, loader: Iterable, device: torch.device, precision: str = "fp32"
) -> tuple[torch.Tensor, torch.Tensor, int, float]:
    """Pre-logit features of a timm model over ``loader``: (features (N, D) fp32 on CPU, labels, skipped, seconds).

    Features are ``forward_head(forward_features(x), pre_logits=True)``: the input of the classifier.
    """

    def features(x: torch.Tensor) -> torch.Tensor:
        return model.forward_head(model.forward_features(x), pre_logits=True).float().cpu()

    feats, labels, skipped, seconds = run_frozen(model, features, loader, device, precision)
    width = getattr(model, "num_features", 0)
    x = torch.cat(feats) if feats else torch.empty(0, width)
    y = torch.cat(labels) if labels else torch.empty(0, dtype=torch.long)
    return x, y, skipped, seconds


def train_mode_layers(model: nn.Module, skip: tuple[nn.Module, ...] = ()) -> list[str]:
    """Names of the layers of ``model`` (outside ``skip``) whose output changes in training mode:
    dropout or drop-path with a non-zero rate (timm ``DropPath``, ``PatchDropout``), batch norm."""
    inside = {id(m) for s in skip for m in s.modules()}
    out = []
    for name, m in model.named_modules():
        if id(m) in inside:
            continue
        rate = getattr(m, "p", 0.0) if isinstance(m, nn.modules.dropout._DropoutNd) else 0.0
        if "Drop" in type(m).__name__:
            rate = rate or getattr(m, "drop_prob", 0.0) or getattr(m, "prob", 0.0)
        if rate or isinstance(m, nn.modules.batchnorm._BatchNorm):
            out.append(name)
    return out


class FeatureHead(nn.Module):
    """The model's dropout before the classifier and the classifier (shared modules): (B, D) -> logits (B, C).

    ``drop``: timm's ``head_drop`` (applied after ``pre_logits`` features in training mode); its masks are
    drawn as in the full model's forward, so the same seed gives the same masks.
    """

    def __init__(self, head: nn.Module, drop: nn.Module | None = None) -> None:
        super().__init__()
        self.head, self.drop = head, drop if drop is not None else nn.Identity()

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        return self.head(self.drop(f))


class _EpochKeyed(torch.utils.data.Dataset):
    """Item ``(epoch, i)``, as :class:`ResumableSampler` yields keys, is item ``i`` (no per-epoch draw)."""

    def __init__(self, dataset: torch.utils.data.Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]):
        return self.dataset[key[1]]


def feature_loader(
    features: torch.Tensor,
    labels: torch.Tensor,
    batch_size: int,
    shuffle: bool = False,
    seed: int = 0,
    rank: int = 0,
    world_size: int = 1,
) -> torch.utils.data.DataLoader:
    """Batches of (features, labels); with ``shuffle``, the order of epoch e is the image loader's (seed, e) order.

    The same :class:`ResumableSampler` as the image loader (``runs.loaders.make_loader``) draws the order and
    this rank's shard, so a probe on cached features sees the batches head-only training sees at the same
    seed, epoch by epoch, and resumes inside an epoch exactly. Without ``shuffle``: dataset order (this rank's
    share under torchrun). The loader's own generator keeps iterator creation off the global RNG.
    """
    data: torch.utils.data.Dataset = torch.utils.data.TensorDataset(features, labels)
    if shuffle:
        data, sampler = _EpochKeyed(data), ResumableSampler(len(data), seed, batch_size, rank, world_size)
    else:
        sampler = ShardedEvalSampler(len(data), rank, world_size) if world_size > 1 else None
    return torch.utils.data.DataLoader(
        data, batch_size=batch_size, sampler=sampler, generator=torch.Generator().manual_seed(seed)
    )
