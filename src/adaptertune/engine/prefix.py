"""Frozen-prefix cache: the patch embedding and the frozen blocks before the first trained one, run once.

For a timm ViT whose trained parts (adapters, LoRA, the head) start at block ``k > 0``, the tokens after
block ``k - 1`` of an unaugmented image are the same every epoch. :func:`extract_prefix` computes them
once per image, and :class:`PrefixTail` runs blocks ``k..`` + norm + head on them, so an epoch costs the
tail's forward and backward only (the loaders over the tokens: :mod:`adaptertune.engine.cached`).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from ..errors import ConfigError
from ..vit import backbone_blocks, embed_tokens, embedding_parts, logits_from_tokens, runs_in_stages
from .cached import run_frozen

__all__ = ["PrefixTail", "extract_prefix", "first_trained_block", "prefix_tokens"]


def _active(module: nn.Module) -> bool:
    """Trainable, hooked, or random in training mode (dropout / drop-path with a non-zero rate)."""
    for m in module.modules():
        if m._forward_hooks or m._forward_pre_hooks:
            return True
        if isinstance(m, nn.Dropout) and m.p > 0 or float(getattr(m, "drop_prob", 0.0) or 0.0) > 0:
            return True
    return any(p.requires_grad for p in module.parameters())


def first_trained_block(model: nn.Module) -> int:
    """Index of the first block whose output can differ between epochs of an unaugmented run (0 when the
    embedding itself trains or draws dropout); ``len(model.blocks)`` when only the head trains.

    Raises:
        ConfigError: ``model`` is not a timm ``VisionTransformer`` (no ``blocks`` / ``_pos_embed``).
    """
    if not runs_in_stages(model):
        raise ConfigError(
            f"`train.cache_prefix` needs a timm VisionTransformer, got {type(model).__name__}; turn it off."
        )
    embed, tensors = embedding_parts(model)
    if any(_active(m) for m in embed) or any(p.requires_grad for p in tensors):
        return 0
    blocks = backbone_blocks(model)
    return next((i for i, blk in enumerate(blocks) if _active(blk)), len(blocks))


def prefix_tokens(model: nn.Module, x: torch.Tensor, k: int) -> torch.Tensor:
    """Images (B, 3, H, W) -> tokens (B, T, D) after block ``k - 1``, as ``forward_features`` computes them."""
    x = embed_tokens(model, x)
    for blk in backbone_blocks(model)[:k]:
        x = blk(x)
    return x


class PrefixTail(nn.Module):
    """Blocks ``k..`` + norm + head of ``model`` (its own modules, shared): tokens (B, T, D) -> logits (B, C).

    Parameter names are the model's under ``model.``.
    """

    def __init__(self, model: nn.Module, k: int) -> None:
        super().__init__()
        self.model, self.k = model, k

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = tokens
        for blk in backbone_blocks(self.model)[self.k :]:
            x = blk(x)
        return logits_from_tokens(self.model, x)


@torch.no_grad()
def extract_prefix(
    model: nn.Module, k: int, loader: Iterable, device: torch.device, precision: str = "fp32"
) -> tuple[torch.Tensor, torch.Tensor, int, float]:
    """Prefix tokens over ``loader``: (tokens (N, T, D) on ``device``, labels, skipped, seconds)."""
    tokens, labels, skipped, seconds = run_frozen(
        model, lambda x: prefix_tokens(model, x, k), loader, device, precision
    )
    if not tokens:
        return torch.empty(0, device=device), torch.empty(0, dtype=torch.long, device=device), skipped, 0.0
    return torch.cat(tokens), torch.cat(labels).to(device), skipped, seconds
