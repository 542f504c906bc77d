"""Visual Prompt Tuning (Jia et al., ECCV 2022): N learned prompt tokens in the token sequence of a frozen ViT.

``vpt-shallow`` inserts one set of prompts after the prefix tokens (class and register tokens) at the input of
block 0 and carries them through every block: ``[prefix, P, patches]``. ``vpt-deep`` inserts a set at block 0
and, before every later block ``i``, replaces the prompt positions (the previous block's prompt outputs, which
are discarded) with block ``i``'s own set.

After the last block the prompt tokens are dropped, so the final norm, the pooling and the head read exactly the
tokens of the plain model: the class token, or with ``global_pool='avg'`` the mean over the patch tokens only
(timm's ``avg`` pooling skips the prefix; the prompts are gone by then, so they are excluded too). The final
norm acts per token, so dropping the prompts before it equals dropping them after it.

Init: ``U(-v, v)`` with ``v = sqrt(6 / (patch_dim + D))``, ``patch_dim = 3 * patch_h * patch_w`` (Xavier-uniform
over the patch embedding's fan-in and the width; 0.0625 on ViT-B/16). Dropout on the prompt tokens each time
they enter (Mai et al. use 0.1, the original code 0). With prompts in the sequence every token attends to them,
so the model does not start at the backbone's logits. Not mergeable.

Everything runs in forward hooks on the blocks (the prompts of one task in one block are a set of the block's
:class:`PromptSlot`), so the backbone's ``state_dict`` keys never change (a set's tensors appear under
``blocks.{i}.prompts.{set}.tokens``) and tasks with their own prompts share one backbone.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from ..config_checks import _as_int, _as_probability
from ..errors import ConfigError
from ..vit import backbone_blocks, backbone_width, patch_tokens
from .flops import BlockCost, Extra, StepFlops, ViTGeometry, count_step, placed
from .registry import Method, register_method
from .slots import BlockSlot

__all__ = ["BlockPrompts", "PromptSlot", "VPTDeepMethod", "VPTOptions", "VPTShallowMethod", "prompt_bound"]


@dataclass
class VPTOptions:
    """VPT's options (YAML/CLI ``adapter.*``).

    Args:
        prompts: prompt tokens N per set (shallow: one set; deep: one set per block).
        dropout: dropout on the prompt tokens during training.
    """

    prompts: int = 10
    dropout: float = 0.1

    def __post_init__(self) -> None:
        self.prompts = _as_int("adapter.prompts", self.prompts, minimum=1)
        self.dropout = _as_probability("adapter.dropout", self.dropout)


def prompt_bound(patch_dim: int, width: int) -> float:
    """The init range v of ``U(-v, v)``: ``sqrt(6 / (patch_dim + width))`` (0.0625 for ViT-B/16)."""
    return math.sqrt(6.0 / (patch_dim + width))


class BlockPrompts(nn.Module):
    """One task's prompts at one block: ``enter`` inserts or replaces them before the block, ``leave`` drops them
    after it (the last block).

    Args:
        n: prompt tokens N.
        dim: token width D.
        prefix: class / register tokens before the prompts.
        mode: ``insert`` (block 0), ``replace`` (deep, later blocks) or ``keep`` (no tensor: shallow's last block).
        drop_after: remove the N prompt tokens from the block's output.
        dropout: dropout on the entering prompts.
        bound: init range v.
    """

    def __init__(
        self, n: int, dim: int, prefix: int, mode: str, drop_after: bool, dropout: float, bound: float
    ) -> None:
        super().__init__()
        self.n, self.prefix, self.mode, self.drop_after = n, prefix, mode, drop_after
        self.tokens = nn.Parameter(torch.empty(n, dim).uniform_(-bound, bound)) if mode != "keep" else None
        self.drop = nn.Dropout(dropout)

    def enter(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, D) -> (B, T + N, D) (insert) or (B, T, D) with the prompt positions replaced."""
        if self.tokens is None:
            return x
        p = self.drop(self.tokens.to(x.dtype).expand(x.shape[0], -1, -1))  # (B, N, D): a mask per image
        skip = self.n if self.mode == "replace" else 0
        return torch.cat([x[:, : self.prefix], p, x[:, self.prefix + skip :]], dim=1)

    def leave(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T + N, D) -> (B, T, D): the prompt tokens dropped (the last block only)."""
        if not self.drop_after:
            return x
        return torch.cat([x[:, : self.prefix], x[:, self.prefix + self.n :]], dim=1)

    def extra_repr(self) -> str:
        return f"n={self.n}, prefix={self.prefix}, mode={self.mode}, drop_after={self.drop_after}"


class PromptSlot(BlockSlot):
    """Prompt sets of one block (``block.prompts``): the active one enters before the block (a forward pre-hook)
    and leaves after it (a forward hook)."""

    attr = "prompts"
    kind = "prompt"

    @classmethod
    def pre_hook_targets(cls, block: nn.Module) -> dict[str, nn.Module]:
        return {"": block}

    def enter(self, name: str, target: nn.Module, args: tuple) -> tuple:
        return (self[self.active].enter(args[0]), *args[1:])

    def run(self, module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
        return module.leave(output)


def prompt_sets(model: nn.Module, options: VPTOptions, deep: bool) -> dict[int, BlockPrompts]:
    """Block index -> that block's :class:`BlockPrompts` for one task (fresh init)."""
    blocks = backbone_blocks(model)
    tokens = patch_tokens(model)
    if tokens is None:
        raise ConfigError(
            f"VPT needs a convolutional patch embedding (`patch_embed.proj`) to size its init; "
            f"{type(model).__name__} has none."
        )
    d, last = backbone_width(model), len(blocks) - 1
    bound = prompt_bound(tokens.patch_dim, d)

    def make(i: int, mode: str) -> BlockPrompts:
        return BlockPrompts(options.prompts, d, tokens.prefix, mode, i == last, options.dropout, bound)

    if deep:
        return {i: make(i, "insert" if i == 0 else "replace") for i in range(len(blocks))}
    return {0: make(0, "insert"), **({last: make(last, "keep")} if last > 0 else {})}


class _VPTMethod(Method):
    """Shallow and deep VPT: the same slot and options; ``deep`` says which blocks get a set of their own."""

    options = VPTOptions
    defaults = {"lr": 1e-3, "weight_decay": 1e-4}  # Mai et al.'s grid: lr {1e-3, 1e-2} x wd {1e-4, 1e-3}
    lr_grid = (1e-3, 3e-3, 1e-2)
    shares_backbone = True
    slot = PromptSlot
    deep: ClassVar[bool] = False

    def slot_modules(self, model: nn.Module, options: VPTOptions) -> dict[int, nn.Module]:
        return prompt_sets(model, options, self.deep)

    def step_flops(self, geom: ViTGeometry, options: VPTOptions) -> StepFlops:
        """N more tokens in every block. Shallow: the prompts train before block 0, so every layer needs input
        gradients; deep: each block's own prompts enter at its input (a trained tensor at ``in``, no matmul)."""
        if self.deep:
            cost = BlockCost(extras=(Extra("in"),), added_tokens=options.prompts)
            return count_step(geom, placed(geom, range(geom.depth), cost))
        return count_step(geom, [BlockCost(added_tokens=options.prompts)] * geom.depth, input_grad=True)

    def trainable_params(self, geom: ViTGeometry, options: VPTOptions, num_classes: int) -> int:
        sets = geom.depth if self.deep else 1
        return sets * options.prompts * geom.dim + geom.head_params(num_classes)

    def frozen_prefix(self, model: nn.Module, options: VPTOptions) -> int:
        return 0  # the prompts enter at block 0's input


class VPTShallowMethod(_VPTMethod):
    """VPT-shallow: N prompts (default 10) after the prefix tokens at the input, kept through every block.
    N * D parameters: 7,680 on ViT-B/16 at N=10."""

    name = "vpt-shallow"
    description = "VPT-shallow: frozen backbone + N learned prompt tokens at the input (default 10) + head"


class VPTDeepMethod(_VPTMethod):
    """VPT-deep: a fresh set of N prompts (default 10) before every block. L * N * D parameters: 92,160 on
    ViT-B/16 at N=10, 460,800 at N=50."""

    name = "vpt-deep"
    description = "VPT-deep: frozen backbone + N learned prompt tokens before every block (default 10) + head"
    deep = True


register_method(VPTShallowMethod())
register_method(VPTDeepMethod())
