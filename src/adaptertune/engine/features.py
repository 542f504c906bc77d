"""Frozen-backbone features, computed once (for head-only training on a tensor).

Head-only training on cached features is head-only training on images without augmentation, step for step,
when three things hold: the feature loader draws the image loader's seeded order
(:class:`~adaptertune.engine.cached.TensorLoader`: same seeded order, same shard per rank, no
draw from the global RNG); the classifier sees the model's own dropout before it (``head_drop``: same masks
from the same RNG stream, :class:`FeatureHead`); and nothing else in the backbone behaves differently in
training mode (:func:`train_mode_layers` lists what would: dropout, drop-path, batch norm), since features
are computed once in eval mode.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from ..vit import feature_width, pre_logits
from .cached import run_frozen

__all__ = ["FeatureHead", "extract_features", "train_mode_layers"]


def extract_features(
    model: nn.Module, loader: Iterable, device: torch.device, precision: str = "fp32"
) -> tuple[torch.Tensor, torch.Tensor, int, float]:
    """Pre-logit features of a timm model over ``loader``: (features (N, D) fp32 on CPU, labels, skipped, seconds).

    Features are ``forward_head(forward_features(x), pre_logits=True)``: the input of the classifier.
    """

    def features(x: torch.Tensor) -> torch.Tensor:
        return pre_logits(model, x).float().cpu()

    feats, labels, skipped, seconds = run_frozen(model, features, loader, device, precision)
    x = torch.cat(feats) if feats else torch.empty(0, feature_width(model))
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
