"""BitFit (Ben Zaken et al., 2022): train only the bias terms of the backbone, plus the new head."""

from __future__ import annotations

from torch import nn

from ..vit import head_parameter_names
from .flops import StepFlops, ViTGeometry, count_step
from .registry import Method, register_method

__all__ = ["BitFitMethod"]


class BitFitMethod(Method):
    name = "bitfit"
    description = "frozen backbone except its bias terms, + new linear head (BitFit)"
    plain_after_merge = True

    def build(self, model: nn.Module, options: None) -> nn.Module:
        """Every ``*.bias`` (attention, MLP, norms, patch embedding) and the classifier train; nothing else."""
        head = set(head_parameter_names(model))
        for n, p in model.named_parameters():
            p.requires_grad_(n in head or n.endswith(".bias"))
        return model

    def step_flops(self, geom: ViTGeometry, options: None) -> StepFlops:
        # the patch embedding's bias trains: gradients flow through every block, no weight-gradient matmul
        return count_step(geom, input_grad=True)

    def trainable_params(self, geom: ViTGeometry, options: None, num_classes: int) -> int:
        return geom.bias_params() + geom.head_params(num_classes)

    def frozen_prefix(self, model: nn.Module, options: None) -> int:
        return 0


register_method(BitFitMethod())
