"""Head-only transfer: the frozen backbone with a new linear classifier (the paper's lower baseline)."""

from __future__ import annotations

from torch import nn

from ..vit import backbone_blocks, head_parameter_names
from .flops import StepFlops, ViTGeometry, count_step
from .registry import Method, register_method

__all__ = ["HeadMethod", "build_head"]


def build_head(model: nn.Module) -> nn.Module:
    """Freeze everything but the classifier (the final norm stays frozen too)."""
    head = set(head_parameter_names(model))
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

    def trainable_params(self, geom: ViTGeometry, options: None, num_classes: int) -> int:
        return geom.head_params(num_classes)

    def frozen_prefix(self, model: nn.Module, options: None) -> int:
        return len(backbone_blocks(model))


register_method(HeadMethod())
