"""Full fine-tuning: every parameter of the backbone and the new head trains (the paper's upper baseline)."""

from __future__ import annotations

from torch import nn

from .flops import LINEARS, BlockCost, StepFlops, ViTGeometry, count_step
from .registry import Method, register_method

__all__ = ["FullMethod"]


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
        return count_step(geom, [BlockCost(trained=frozenset(LINEARS))] * geom.depth, embed=True)

    def trainable_params(self, geom: ViTGeometry, options: None, num_classes: int) -> int:
        return geom.backbone_params() + geom.head_params(num_classes)

    def frozen_prefix(self, model: nn.Module, options: None) -> int:
        return 0


register_method(FullMethod())
