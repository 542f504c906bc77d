"""AdaptFormer-style adapters (Chen et al., 2022): a bottleneck parallel to the MLP of each placed block.

For a timm ViT block ``x = x + ls2(mlp(norm2(x)))`` becomes::

    x = x + ls2(mlp(u) + alpha * W_up(act(W_down u)))        u = norm2(x)

so the adapter sees the MLP's input and shares its LayerScale / drop-path residual path. ``W_up`` is zero,
so the adapted network starts bitwise at the pretrained function. The adapter is added by a forward hook
on ``block.mlp``; its weights live in ``block.adapters`` (the same slot as serial adapters), so the
backbone's ``state_dict`` keys are unchanged and ``set_active`` / ``remove_adapters`` /
``adapter_state_dict`` work as for serial adapters.
"""

from __future__ import annotations

import torch
from torch import nn

from ..adapters import (
    DEFAULT_SET,
    AdapterSlot,
    attach_adapter_set,
)
from ..config import AdapterConfig
from ..errors import ConfigError
from .basic import AdapterMethod
from .registry import register_method

__all__ = ["ParallelMethod", "ParallelSlot", "add_parallel_adapters"]


class ParallelSlot(AdapterSlot):
    """Adapter sets of one block, applied in parallel to its MLP (hook on ``block.mlp``)."""

    def hook(self, module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
        if self.active is None or self.active not in self:
            return output
        return output + self[self.active](args[0])  # (B, N, d): adapter on the MLP's input


def _slot_for(block: nn.Module) -> ParallelSlot:
    slot = getattr(block, "adapters", None)
    if slot is not None and not isinstance(slot, ParallelSlot):
        raise ConfigError(
            "This block already holds serial adapters; parallel and serial adapters cannot share a model."
        )
    if slot is None:
        mlp = getattr(block, "mlp", None)
        if not isinstance(mlp, nn.Module):
            raise ConfigError(f"Block {type(block).__name__} has no `.mlp`; parallel adapters need a timm ViT block.")
        slot = block.adapters = ParallelSlot()
        for key, fn in list(mlp._forward_hooks.items()):  # a hook left by a removed slot
            if isinstance(getattr(fn, "__self__", None), ParallelSlot):
                del mlp._forward_hooks[key]
        mlp.register_forward_hook(slot.hook)
    return slot


def add_parallel_adapters(model: nn.Module, config: AdapterConfig | None = None, name: str = DEFAULT_SET) -> nn.Module:
    """Attach a set of parallel adapters in place, make it active, freeze all but adapters and head."""
    return attach_adapter_set(model, config, name, _slot_for)


class ParallelMethod(AdapterMethod):
    """The adapter method's options, multi-task sets and FLOP count (a bottleneck on the MLP input costs the
    same matmuls as one after the block); only the slot differs."""

    name = "parallel"
    description = "AdaptFormer: frozen backbone + zero-init scaled bottleneck parallel to each MLP + head"
    slot_type = ParallelSlot
    kind = "parallel"

    def add(self, model: nn.Module, options: AdapterConfig, name: str) -> nn.Module:
        return add_parallel_adapters(model, options, name=name)


register_method(ParallelMethod())
