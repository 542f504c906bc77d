"""The paper's three methods: head-only, full fine-tuning, AdapterTune (serial adapters)."""

from __future__ import annotations

import torch
from torch import nn

from .. import adapters as adp
from ..config import AdapterConfig, parse_placement
from ..errors import CheckpointError, ConfigError
from .flops import StepFlops, ViTGeometry, count_step
from .registry import Method, register_method

__all__ = ["AdapterMethod", "FullMethod", "HeadMethod", "build_head"]


def build_head(model: nn.Module) -> nn.Module:
    """Freeze everything but the classifier (the final norm stays frozen too)."""
    head = set(adp.head_parameter_names(model))
    for n, p in model.named_parameters():
        p.requires_grad_(n in head)
    return model


class HeadMethod(Method):
    name = "head"
    description = "frozen backbone, new linear head (head-only transfer)"
    shares_backbone = True  # a task is its head alone
    lr_grid = (1e-3, 3e-3, 1e-2)  # a linear head on frozen features takes larger steps than adapters
    plain_after_merge = True

    def build(self, model: nn.Module, options: None) -> nn.Module:
        return build_head(model)

    def step_flops(self, geom: ViTGeometry, options: None) -> StepFlops:
        return count_step(geom)


class FullMethod(Method):
    # Paper: AdamW lr 1e-3, wd 0.05 for every method. Full fine-tuning of a pretrained ViT is unstable at 1e-3,
    # so its default is 10x lower (as in the ViT/DeiT fine-tuning recipes).
    name = "full"
    description = "full fine-tuning: every parameter trains"
    defaults = {"lr": 1e-4, "weight_decay": 0.05}
    lr_grid = (1e-5, 3e-5, 1e-4)  # far below the adapters' grid: a PETL grid makes full fine-tuning collapse
    plain_after_merge = True

    def build(self, model: nn.Module, options: None) -> nn.Module:
        for p in model.parameters():
            p.requires_grad_(True)
        return model

    def step_flops(self, geom: ViTGeometry, options: None) -> StepFlops:
        return count_step(geom, full=True)


class AdapterMethod(Method):
    """Adapter sets in ``block.adapters`` slots (:mod:`adaptertune.adapters`); tasks are named sets."""

    name = "adapter"
    description = "AdapterTune: frozen backbone + zero-init residual low-rank adapters + head"
    options = AdapterConfig
    shares_backbone = True
    slot_type: type[adp.AdapterSlot] = adp.AdapterSlot
    kind = "serial"

    def add(self, model: nn.Module, options: AdapterConfig, name: str) -> nn.Module:
        return adp.add_adapters(model, options, name=name)

    def build(self, model: nn.Module, options: AdapterConfig) -> nn.Module:
        return self.add(model, options, adp.DEFAULT_SET)

    def attach(
        self, backbone: nn.Module, task: str, options: AdapterConfig, tensors: dict[str, torch.Tensor], source: str
    ) -> None:
        held = {
            type(b.adapters)
            for b in adp.backbone_blocks(backbone)
            if isinstance(getattr(b, "adapters", None), adp.AdapterSlot)
        }
        if held - {self.slot_type}:
            raise ConfigError(
                f"Task '{task}' ({source}) uses {self.kind} '{self.name}' adapters but this backbone holds adapters "
                "of the other kind; serial and parallel adapter tasks cannot share one backbone."
            )
        self.add(backbone, options, task)
        try:
            adp.load_adapter_state_dict(backbone, _adapter_keys(tensors, source), name=task)
        except CheckpointError as e:
            adp.remove_adapters(backbone, task)
            raise CheckpointError(f"'{source}': {e}") from None

    def activate(self, backbone: nn.Module, task: str | None) -> None:
        if adp.list_adapter_sets(backbone):
            adp.set_active(backbone, task)

    def detach(self, backbone: nn.Module, task: str) -> None:
        adp.remove_adapters(backbone, task)

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


register_method(HeadMethod())
register_method(FullMethod())
register_method(AdapterMethod())
