"""LayerNorm tuning (LN-Tune, as in Mai et al.'s benchmark): train every norm layer's weight and bias, plus the head.

A parameter trains when the module that owns it has ``norm`` in its name: every block's ``norm1`` / ``norm2``, the
final ``norm`` or, on a pooled model, ``fc_norm``; and whatever other norm a variant has (a pre-norm, a patch
embedding norm, qk-norms). Nothing is added, so the tuned model is the plain timm architecture as it stands.
"""

from __future__ import annotations

from torch import nn

from ..vit import head_parameter_names
from .flops import BlockCost, Extra, StepFlops, ViTGeometry, count_step
from .registry import Method, register_method

__all__ = ["NORM_SITES", "LnTuningMethod", "norm_parameter_names"]

# a block's trained norms as elementwise FLOP extras (methods/flops.py): norm1 feeds the attention, norm2 the MLP
NORM_SITES = (Extra("attn_in"), Extra("mlp_in"))


def norm_parameter_names(model: nn.Module) -> list[str]:
    """Qualified names of the parameters of every module whose own name contains ``norm``."""
    return [n for n, _ in model.named_parameters() if "norm" in n.rpartition(".")[0].rpartition(".")[2]]


class LnTuningMethod(Method):
    """LayerNorm tuning: the norms' affine parameters and the head train. Size on ViT-B/16: 2 norms x 2 x 768 per
    block + the final norm = 38,400 parameters (METHODS.md); the method has no size option."""

    name = "ln"
    description = "LayerNorm tuning: frozen backbone except every norm's weight and bias, + new linear head"
    plain_after_merge = True  # nothing to fold: the norms are the backbone's own

    def build(self, model: nn.Module, options: None) -> nn.Module:
        train = set(head_parameter_names(model)) | set(norm_parameter_names(model))
        for n, p in model.named_parameters():
            p.requires_grad_(n in train)
        return model

    def step_flops(self, geom: ViTGeometry, options: None) -> StepFlops:
        # no matmul of its own: gradients start at block 0's norm1 (before the blocks, with a pre-norm)
        return count_step(geom, [BlockCost(extras=NORM_SITES)] * geom.depth, input_grad=geom.norm_pre)

    def trainable_params(self, geom: ViTGeometry, options: None, num_classes: int) -> int:
        # the blocks', final and pre-norms; a patch-embedding norm or qk-norms (not in ViTGeometry) are not counted
        return geom.norm_params() + geom.head_params(num_classes)

    def frozen_prefix(self, model: nn.Module, options: None) -> int:
        return 0  # block 0's norm1 trains


register_method(LnTuningMethod())
