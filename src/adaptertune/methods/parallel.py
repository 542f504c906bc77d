"""AdaptFormer-style adapters (Chen et al., 2022): a bottleneck parallel to the MLP of each placed block.

For a timm ViT block ``x = x + ls2(mlp(norm2(x)))`` becomes::

    x = x + ls2(mlp(u) + alpha * W_up(act(W_down u)))        u = norm2(x)

so the adapter sees the MLP's input and shares its LayerScale / drop-path residual path. ``W_up`` is zero,
so the adapted network starts bitwise at the pretrained function. The adapter is added by a forward hook
on ``block.mlp``; its weights live in ``block.adapters`` (the attribute serial adapters use), so the
backbone's ``state_dict`` keys are unchanged and ``set_active`` / ``remove_adapters`` /
``adapter_state_dict`` work as for serial adapters. The two kinds cannot share one backbone.
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import ConfigError
from .adapter import AdapterConfig, AdapterMethod, attach_adapter_set
from .registry import register_method
from .slots import DEFAULT_SET, BlockSlot

__all__ = ["ParallelMethod", "ParallelSlot", "add_parallel_adapters"]


class ParallelSlot(BlockSlot):
    """Parallel adapter sets of one block (``block.adapters``), applied beside its MLP (hook on ``block.mlp``)."""

    attr = "adapters"
    kind = "parallel adapter"

    @classmethod
    def hook_target(cls, block: nn.Module) -> nn.Module:
        mlp = getattr(block, "mlp", None)
        if not isinstance(mlp, nn.Module):
            raise ConfigError(f"Block {type(block).__name__} has no `.mlp`; parallel adapters need a timm ViT block.")
        return mlp

    def run(self, module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
        return output + module(args[0])  # (B, N, d): adapter on the MLP's input


def add_parallel_adapters(model: nn.Module, config: AdapterConfig | None = None, name: str = DEFAULT_SET) -> nn.Module:
    """Attach a set of parallel adapters in place, make it active, freeze all but adapters and head."""
    return attach_adapter_set(model, config, name, ParallelSlot)


class ParallelMethod(AdapterMethod):
    """The adapter method's options, multi-task sets, parameter count and cache prefix; only the slot and the
    bottleneck's FLOP site differ (beside the MLP it costs the same matmuls as after the block)."""

    name = "parallel"
    description = "AdaptFormer: frozen backbone + zero-init scaled bottleneck parallel to each MLP + head"
    slot = ParallelSlot
    site = "mlp"


register_method(ParallelMethod())
