"""Frozen-prefix cache: the patch embedding and the frozen blocks before the first trained one, run once.

For a timm ViT whose trained parts (adapters, LoRA, the head) start at block ``k > 0``, the tokens after
block ``k - 1`` of an unaugmented image are the same every epoch. How many leading blocks a method leaves
frozen is the method's to say (its registry entry; the caller passes the number in): :func:`cacheable_prefix`
checks it against the model and stops at the first block that draws randomness in training.
:func:`extract_prefix` computes the tokens once per image, and :class:`PrefixTail` runs blocks ``k..`` + norm +
head on them, so an epoch costs the tail's forward and backward only (the loaders over the tokens:
:mod:`adaptertune.engine.cached`).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from ..errors import ConfigError
from ..vit import backbone_blocks, embed_tokens, embedding_parts, logits_from_tokens, runs_in_stages
from .cached import run_frozen

__all__ = ["PrefixTail", "cacheable_prefix", "extract_prefix", "prefix_tokens"]


def _random(module: nn.Module) -> bool:
    """Random in training mode (dropout / drop-path with a non-zero rate)."""
    return any(
        isinstance(m, nn.Dropout) and m.p > 0 or float(getattr(m, "drop_prob", 0.0) or 0.0) > 0
        for m in module.modules()
    )


def _trains(module: nn.Module) -> bool:
    return any(p.requires_grad for p in module.parameters())


def cacheable_prefix(model: nn.Module, frozen: int) -> int:
    """How many leading blocks can run once per image: the ``frozen`` blocks the method leaves untouched
    (its :meth:`~adaptertune.methods.registry.Method.frozen_prefix`), up to the first one that draws dropout or
    drop-path in training (0 when the embedding does, or the method leaves no block frozen).

    Raises:
        ConfigError: ``model`` is not a timm ``VisionTransformer`` (no ``blocks`` / ``_pos_embed``); a tensor in
            the embedding or in the ``frozen`` blocks trains (the method's count is wrong).
    """
    if not runs_in_stages(model):
        raise ConfigError(
            f"`train.cache_prefix` needs a timm VisionTransformer, got {type(model).__name__}; turn it off."
        )
    embed, tensors = embedding_parts(model)
    blocks = backbone_blocks(model)
    frozen = min(frozen, len(blocks))
    if frozen == 0:
        return 0  # nothing to cache (the embedding may train)
    trains = [any(t.requires_grad for t in tensors) or any(_trains(m) for m in embed)]
    trains += [_trains(b) for b in blocks[:frozen]]
    if any(trains):
        where = "the embedding" if trains[0] else f"block {trains.index(True) - 1}"
        raise ConfigError(
            f"The method says its first {frozen} blocks stay frozen, but {where} trains; `train.cache_prefix` "
            "would not train it. Turn the cache off."
        )
    if any(_random(m) for m in embed):
        return 0
    return next((i for i, blk in enumerate(blocks[:frozen]) if _random(blk)), frozen)


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
