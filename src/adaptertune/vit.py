"""What a timm ViT is made of: its transformer blocks, token width and classifier; parameter counts.

Backbones and methods read a model's structure through these functions, so the one place that knows timm's
attribute names (``blocks``, ``embed_dim``, ``get_classifier``) is this module. Imports torch and errors only.
"""

from __future__ import annotations

from typing import NamedTuple

from torch import nn

from .errors import ConfigError

__all__ = ["ParamCount", "backbone_blocks", "backbone_width", "head_parameter_names", "trainable_parameters"]


def backbone_blocks(model: nn.Module) -> nn.Sequential | nn.ModuleList:
    """The transformer blocks of a timm ViT-family model (``model.blocks``)."""
    blocks = getattr(model, "blocks", None)
    if not isinstance(blocks, nn.Sequential | nn.ModuleList) or len(blocks) == 0:
        raise ConfigError(
            f"Model {type(model).__name__} has no `.blocks` sequence of transformer blocks; adaptertune supports "
            "timm ViT-family models (vit_*, deit_*, vit_*_dinov2, eva_*, ...)."
        )
    return blocks


def backbone_width(model: nn.Module) -> int:
    """Token width d of the residual stream."""
    for attr in ("embed_dim", "num_features"):
        d = getattr(model, attr, None)
        if isinstance(d, int) and d > 0:
            return d
    raise ConfigError(f"Cannot tell the token width of {type(model).__name__}: it has no `embed_dim`.")


def head_parameter_names(model: nn.Module) -> list[str]:
    """Qualified names of the classifier's parameters (``get_classifier()`` in timm)."""
    head = model.get_classifier() if hasattr(model, "get_classifier") else getattr(model, "head", None)
    if not isinstance(head, nn.Module):
        return []
    ids = {id(p) for p in head.parameters()}
    return [n for n, p in model.named_parameters() if id(p) in ids]


class ParamCount(NamedTuple):
    trainable: int
    total: int

    @property
    def percent(self) -> float:
        return 100.0 * self.trainable / max(self.total, 1)


def trainable_parameters(model: nn.Module) -> ParamCount:
    """Trainable and total parameter counts (tied parameters counted once)."""
    params = {id(p): p for p in model.parameters()}.values()
    return ParamCount(sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params))
