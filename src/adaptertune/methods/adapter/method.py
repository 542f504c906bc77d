"""The registered ``adapter`` method: AdapterTune's build, multi-task attach/switch/remove and FLOP count."""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn

from ...config_checks import parse_placement
from ...errors import CheckpointError, ConfigError
from ..flops import StepFlops, ViTGeometry, count_step
from ..registry import Method, register_method
from ..slots import BlockSlot
from .layer import AdapterSlot
from .model import DEFAULT_SET, attach_adapter_set, load_adapter_state_dict
from .options import AdapterConfig

__all__ = ["AdapterMethod"]


class AdapterMethod(Method):
    """Adapter sets in the blocks' ``slot`` (:class:`~.layer.AdapterSlot`: on the block output); tasks are named
    sets. :class:`~adaptertune.methods.parallel.ParallelMethod` is this method with another slot."""

    name = "adapter"
    description = "AdapterTune: frozen backbone + zero-init residual low-rank adapters + head"
    options = AdapterConfig
    shares_backbone = True
    slot: ClassVar[type[BlockSlot]] = AdapterSlot

    def build(self, model: nn.Module, options: AdapterConfig) -> nn.Module:
        return attach_adapter_set(model, options, DEFAULT_SET, self.slot)

    def attach(
        self, backbone: nn.Module, task: str, options: AdapterConfig, tensors: dict[str, torch.Tensor], source: str
    ) -> None:
        try:
            attach_adapter_set(backbone, options, task, self.slot)
        except ConfigError as e:
            raise ConfigError(f"Task '{task}' ({source}): {e}") from None
        try:
            load_adapter_state_dict(backbone, _adapter_keys(tensors, source), name=task)
        except CheckpointError as e:
            self.slot.detach(backbone, task)
            raise CheckpointError(f"'{source}': {e}") from None

    def activate(self, backbone: nn.Module, task: str | None) -> None:
        self.slot.activate(backbone, task)

    def detach(self, backbone: nn.Module, task: str) -> None:
        self.slot.detach(backbone, task)

    def step_flops(self, geom: ViTGeometry, options: AdapterConfig) -> StepFlops:
        return count_step(geom, adapted=parse_placement(options.placement, geom.depth), rank=options.rank)


def _adapter_keys(sd: dict[str, torch.Tensor], source: str) -> dict[str, torch.Tensor]:
    """Model parameter names (``blocks.3.adapters.default.up.weight``) -> ``adapters.3.up.weight``."""
    out = {}
    for k, v in sd.items():
        parts = k.split(".")
        if len(parts) < 5 or parts[0] != "blocks" or parts[2] != "adapters":
            raise CheckpointError(f"'{source}' holds '{k}', not an adapter tensor of a timm ViT block.")
        out[f"adapters.{parts[1]}.{'.'.join(parts[4:])}"] = v
    return out


register_method(AdapterMethod())
