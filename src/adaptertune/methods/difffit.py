"""DiffFit (Xie et al., 2023), as in Mai et al.'s benchmark: BitFit + LayerNorm tuning + a learned per-channel
scale on each residual branch of every block.

For a timm ViT block::

    x1 = x + gamma1 * dp1(ls1(attn(norm1(x))))        x2 = x1 + gamma2 * dp2(ls2(mlp(norm2(x1))))

with gamma1, gamma2 in R^D starting at 1 (the model starts bitwise at the backbone's logits). The scales run as
forward hooks on ``ls1`` / ``ls2`` (an Identity without LayerScale; drop-path is a per-sample scalar, so the order
does not matter) and live in ``block.difffit``, so the backbone's ``state_dict`` keys never change. Merging folds
gamma1 into ``attn.proj`` and gamma2 into ``mlp.fc2`` (weight rows and bias): the plain timm architecture.
The method trains the backbone's own biases and norms, so tasks cannot share a backbone.
"""

from __future__ import annotations

import functools

import torch
from torch import nn

from ..errors import ConfigError
from ..vit import backbone_blocks, backbone_width
from .bitfit import BitFitMethod
from .flops import LINEARS, BlockCost, Extra, StepFlops, ViTGeometry, count_step
from .ln_tuning import NORM_SITES, norm_parameter_names
from .registry import Method, register_method
from .slots import BlockSlot, HookHandles

__all__ = ["BranchScales", "DiffFitMethod", "DiffFitSlot", "add_difffit", "merge_difffit"]

DEFAULT_SET = "default"
# scale -> (the module whose output it scales, the linear layer a merge folds it into), under the block
BRANCHES = {"gamma1": ("ls1", "attn.proj"), "gamma2": ("ls2", "mlp.fc2")}


class BranchScales(nn.Module):
    """One block's residual-branch scales ``gamma1`` (attention) and ``gamma2`` (MLP), both ones at init."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.gamma1 = nn.Parameter(torch.ones(dim))
        self.gamma2 = nn.Parameter(torch.ones(dim))


class DiffFitSlot(BlockSlot):
    """The branch scales of one block (``block.difffit``): forward hooks on ``ls1`` and ``ls2``."""

    attr = "difffit"
    kind = "DiffFit scale"

    def __init__(self, block: nn.Module) -> None:
        nn.ModuleDict.__init__(self)
        self.active: str | None = None
        targets = self.targets(block)
        hooks = [targets[k].register_forward_hook(functools.partial(self._scale, k)) for k in targets]
        self._handle = HookHandles(hooks)

    @classmethod
    def targets(cls, block: nn.Module) -> dict[str, nn.Module]:
        """Scale name -> the module of ``block`` whose output it multiplies."""
        try:
            return {k: block.get_submodule(path) for k, (path, _) in BRANCHES.items()}
        except AttributeError:
            raise ConfigError(
                f"Block {type(block).__name__} has no `ls1` / `ls2`; DiffFit needs a timm ViT block."
            ) from None

    @classmethod
    def hook_target(cls, block: nn.Module) -> nn.Module:
        cls.targets(block)  # raises ConfigError for a block without the branches
        return block

    def _scale(self, key: str, module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
        return output if self.active is None else output * getattr(self[self.active], key).to(output.dtype)


def add_difffit(model: nn.Module) -> nn.Module:
    """Attach the branch scales in place (active); the biases, the norms, the scales and the head train."""
    d = backbone_width(model)
    DiffFitSlot.attach(model, DEFAULT_SET, {i: BranchScales(d) for i in range(len(backbone_blocks(model)))})
    DiffFitSlot.activate(model, DEFAULT_SET)
    BitFitMethod().build(model, None)  # every bias and the head; everything else frozen
    norms = set(norm_parameter_names(model))
    for n, p in model.named_parameters():
        if n in norms or f".{DiffFitSlot.attr}." in n:
            p.requires_grad_(True)
    return model


@torch.no_grad()
def merge_difffit(model: nn.Module) -> bool:
    """Fold the active scales into ``attn.proj`` / ``mlp.fc2`` and remove them (in place); False if there are none."""
    slots = DiffFitSlot.slots(model)
    if not slots:
        return False
    for i, slot in slots.items():
        if slot.active is None:
            continue
        block = backbone_blocks(model)[i]
        for key, (_, path) in BRANCHES.items():
            linear, gamma = block.get_submodule(path), getattr(slot[slot.active], key)
            linear.weight.mul_(gamma.to(linear.weight.dtype)[:, None])
            if linear.bias is not None:
                linear.bias.mul_(gamma.to(linear.bias.dtype))
    DiffFitSlot.remove(model)
    return True


class DiffFitMethod(Method):
    """DiffFit: BitFit + LayerNorm tuning + per-block residual-branch scales gamma1, gamma2 in R^D (ones at init).
    Size on ViT-B/16: 102,912 biases + 19,200 norm weights + 12 x 2 x 768 scales = 140,544 parameters (METHODS.md);
    the method has no size option."""

    name = "difffit"
    description = "DiffFit: biases + norms + per-block residual-branch scales (ones at init) + new linear head"
    plain_after_merge = True

    def build(self, model: nn.Module, options: None) -> nn.Module:
        return add_difffit(model)

    def merge(self, model: nn.Module) -> bool:
        return merge_difffit(model)

    def step_flops(self, geom: ViTGeometry, options: None) -> StepFlops:
        # no matmul of its own: the linears' biases, the norms and the branch scales train elementwise, and the
        # patch embedding's bias (or else block 0's norm1) starts gradients before the first block linear
        biases = tuple(Extra(n) for n in LINEARS if geom.qkv_bias or n != "qkv")
        cost = BlockCost(extras=(*NORM_SITES, *biases, Extra("attn_out"), Extra("mlp_out")))
        return count_step(geom, [cost] * geom.depth, input_grad=geom.patch_bias or geom.norm_pre)

    def trainable_params(self, geom: ViTGeometry, options: None, num_classes: int) -> int:
        # every bias (the norms' included), the norms' weights, gamma1 and gamma2 per block
        scales = 2 * geom.dim * geom.depth
        return geom.bias_params() + geom.norm_params() // 2 + scales + geom.head_params(num_classes)

    def frozen_prefix(self, model: nn.Module, options: None) -> int:
        return 0  # the patch embedding's bias and block 0's norms train


register_method(DiffFitMethod())
