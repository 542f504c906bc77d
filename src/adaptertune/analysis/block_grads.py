"""Gradients at the output tokens of a frozen ViT's blocks: the pass both rank advisers run.

:mod:`.advise` (the energy rule) and :mod:`.advise_null` (the permutation null) both freeze the backbone, read
its pooled features, and take the gradient of a loss with respect to the output tokens ``h`` of the blocks
that would get adapters. With every parameter frozen autograd builds no graph, so :func:`block_outputs` makes
the graph start at block 0's input and keeps each placed block's output for ``torch.autograd.grad``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from ..config_checks import parse_placement
from ..vit import backbone_blocks, backbone_width

__all__ = ["block_outputs", "freeze", "pooled_features"]


def freeze(model: nn.Module, placement: str | list[int], device: torch.device) -> tuple[nn.Module, list[int], int]:
    """``model`` on ``device`` in eval mode with no parameter requiring a gradient (in place), the indices of
    the blocks ``placement`` names and the token width d.

    Raises:
        ConfigError: a bad placement.
    """
    model = model.to(device).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model, parse_placement(placement, len(backbone_blocks(model))), backbone_width(model)


def pooled_features(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Images -> the classifier's input (B, d): ``forward_head(forward_features(x), pre_logits=True)``."""
    return model.forward_head(model.forward_features(x), pre_logits=True)


@contextmanager
def block_outputs(model: nn.Module, blocks: list[int]) -> Iterator[dict[int, torch.Tensor]]:
    """While open, each forward of ``model`` stores the output tokens (B, N, d) of block ``i`` at ``outs[i]``,
    in a graph that starts at block 0's input, so ``torch.autograd.grad(loss, [outs[i] for i in blocks])``
    works on a frozen model. The hooks are removed on exit.
    """
    all_blocks = backbone_blocks(model)
    outs: dict[int, torch.Tensor] = {}

    def grad_in(module: nn.Module, args: tuple) -> tuple:  # the graph starts at block 0's input
        return (args[0].detach().requires_grad_(True), *args[1:])

    def keep(i: int):
        def hook(module: nn.Module, args: tuple, out: torch.Tensor) -> None:
            outs[i] = out

        return hook

    handles = [all_blocks[0].register_forward_pre_hook(grad_in)]
    handles += [all_blocks[i].register_forward_hook(keep(i)) for i in blocks]
    try:
        yield outs
    finally:
        for handle in handles:
            handle.remove()
