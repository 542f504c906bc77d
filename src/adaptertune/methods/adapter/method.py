"""The registered ``adapter`` method: AdapterTune's modules, parameter count, cache prefix and FLOP count; build and
multi-task attach/switch/remove come from the slot defaults of :class:`~adaptertune.methods.registry.Method`."""

from __future__ import annotations

from dataclasses import replace
from typing import ClassVar

import torch
from torch import nn

from ...config_checks import parse_placement
from ...errors import CheckpointError, ConfigError
from ...vit import backbone_blocks
from ..fit import FitContext, FitInputs
from ..flops import BlockCost, StepFlops, ViTGeometry, bottleneck, count_step, placed
from ..registry import Method, register_method
from ..slots import BlockSlot
from .layer import Adapter, AdapterSlot
from .model import adapter_modules, adapter_param_count, load_adapter_state_dict, set_active_rank
from .nested import truncate_tensors
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
    site: ClassVar[str] = "out"  # where the slot's bottleneck sits (methods/flops.py SITES)

    def slot_modules(self, model: nn.Module, options: AdapterConfig) -> dict[int, nn.Module]:
        return adapter_modules(model, options)

    def load_set(self, model: nn.Module, name: str, tensors: dict[str, torch.Tensor]) -> None:
        load_adapter_state_dict(model, _adapter_keys(tensors), name=name)  # says what differs: placement, rank, d

    def step_flops(self, geom: ViTGeometry, options: AdapterConfig) -> StepFlops:
        cost = BlockCost(extras=(bottleneck(self.site, geom.dim, options.rank),))
        return count_step(geom, placed(geom, parse_placement(options.placement, geom.depth), cost))

    def trainable_params(self, geom: ViTGeometry, options: AdapterConfig, num_classes: int) -> int:
        blocks = len(parse_placement(options.placement, geom.depth))
        return adapter_param_count(blocks, geom.dim, options.rank) + geom.head_params(num_classes)

    def frozen_prefix(self, model: nn.Module, options: AdapterConfig) -> int:
        return min(parse_placement(options.placement, len(backbone_blocks(model))))

    # ---- nested ranks (``adapter.nested``, :mod:`.nested`)
    def prepare_fit(self, model: nn.Module, loaders: tuple, ctx: FitContext) -> FitInputs:
        for m in model.modules():  # each step's rank is drawn from (the run's seed, the step index)
            if isinstance(m, Adapter):
                m.seed = ctx.seed
        return super().prepare_fit(model, loaders, ctx)

    def eval_ranks(self, options: AdapterConfig) -> tuple[int, ...]:
        # 0: the adapters off, the trained head; subclasses whose options have no `nested` (adapter+) never nest
        return (0, *options.grid) if getattr(options, "nested", False) else ()

    def set_eval_rank(self, model: nn.Module, rank: int | None) -> None:
        set_active_rank(model, rank)

    def truncate(
        self, tensors: dict[str, torch.Tensor], options: AdapterConfig, rank: int
    ) -> tuple[dict[str, torch.Tensor], AdapterConfig]:
        if not getattr(options, "nested", False):
            raise ConfigError(f"The adapters are not nested (`adapter.nested` false); they serve rank {options.rank}.")
        return truncate_tensors(tensors, rank), replace(options, rank=rank, nested=False, nested_ranks=None)


def _adapter_keys(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Model parameter names (``blocks.3.adapters.default.up.weight``) -> ``adapters.3.up.weight``."""
    out = {}
    for k, v in sd.items():
        parts = k.split(".")
        if len(parts) < 5 or parts[0] != "blocks" or parts[2] != "adapters":
            raise CheckpointError(f"it holds '{k}', not an adapter tensor of a timm ViT block.")
        out[f"adapters.{parts[1]}.{'.'.join(parts[4:])}"] = v
    return out


register_method(AdapterMethod())
