"""Selective (partial) block tuning: the chosen blocks, or one part of them, train with the head; the rest is frozen.

``blocks`` picks the blocks (a placement spec: ``last:3`` = blocks 9-11 of a 12-block ViT); ``parts`` picks what of
them trains: ``all`` (every tensor of the block), ``attn`` (the attention: qkv, proj, any qk-norms), ``mlp``
(fc1, fc2) or ``qkv`` (the fused qkv projection). Nothing is added, so the tuned model is the plain timm
architecture. The blocks before the first chosen one are frozen and unchanged, so ``train.cache_prefix`` runs
them once per image (:meth:`SelectiveMethod.frozen_prefix`).
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from ..config_checks import _as_choice, _check_placement_syntax, parse_placement
from ..vit import backbone_blocks, head_parameter_names
from .flops import LINEARS, BlockCost, StepFlops, ViTGeometry, count_step, placed
from .ln_tuning import NORM_SITES
from .registry import Method, register_method

__all__ = ["SELECTIVE_PARTS", "SelectiveMethod", "SelectiveOptions", "selected_parameter_names"]

# part -> the prefix (under a block) of the tensors that train; "" = the whole block
_PARTS = {"all": "", "attn": "attn.", "mlp": "mlp.", "qkv": "attn.qkv."}
SELECTIVE_PARTS = tuple(_PARTS)
# part -> the block linears whose weights train (methods/flops.py LINEARS)
_LINEARS = {"all": LINEARS, "attn": ("qkv", "proj"), "mlp": ("fc1", "fc2"), "qkv": ("qkv",)}


@dataclass
class SelectiveOptions:
    """Selective tuning's options (YAML/CLI ``adapter.*``).

    Args:
        blocks: the blocks that train: all, every:K, first:N, last:N or block indices.
        parts: what of each chosen block trains: all, attn, mlp or qkv.
    """

    blocks: str | list[int] = "last:3"
    parts: str = "all"

    def __post_init__(self) -> None:
        self.blocks = _check_placement_syntax(self.blocks)
        self.parts = _as_choice("adapter.parts", self.parts, SELECTIVE_PARTS)


def selected_parameter_names(model: nn.Module, options: SelectiveOptions) -> list[str]:
    """Qualified names of the backbone tensors ``options`` selects (the head excluded)."""
    blocks = backbone_blocks(model)
    prefix = next(n for n, m in model.named_modules() if m is blocks)  # "blocks"
    chosen = parse_placement(options.blocks, len(blocks))
    starts = tuple(f"{prefix}.{i}.{_PARTS[options.parts]}" for i in chosen)
    return [n for n, _ in model.named_parameters() if n.startswith(starts)]


class SelectiveMethod(Method):
    """Selective tuning. Default size: the last 3 blocks whole, 3 x 7,087,872 = 21,263,616 parameters on
    ViT-B/16; METHODS.md counts ``parts: qkv``: 3 x (768 x 2304 + 2304) = 5,315,328.

    Defaults (lr 1e-4, wd 0.05, grid 3e-5..3e-4) are full fine-tuning's: whole pretrained blocks train
    (METHODS.md gives no recipe for this method)."""

    name = "selective"
    description = "selective tuning: the chosen blocks (or their attn / mlp / qkv) + new linear head train"
    options = SelectiveOptions
    defaults = {"lr": 1e-4, "weight_decay": 0.05}
    lr_grid = (3e-5, 1e-4, 3e-4)
    plain_after_merge = True  # nothing to fold: the tuned tensors are the backbone's own

    def build(self, model: nn.Module, options: SelectiveOptions) -> nn.Module:
        train = set(head_parameter_names(model)) | set(selected_parameter_names(model, options))
        for n, p in model.named_parameters():
            p.requires_grad_(n in train)
        return model

    def step_flops(self, geom: ViTGeometry, options: SelectiveOptions) -> StepFlops:
        # the trained linears' weight gradients; a whole block's norms make its qkv need an input gradient too
        # (its LayerScale gammas change nothing: proj and fc2 train before them)
        norms = NORM_SITES if options.parts == "all" else ()
        cost = BlockCost(extras=norms, trained=frozenset(_LINEARS[options.parts]))
        return count_step(geom, placed(geom, parse_placement(options.blocks, geom.depth), cost))

    def trainable_params(self, geom: ViTGeometry, options: SelectiveOptions, num_classes: int) -> int:
        per_block = sum(geom.linear_params(n) for n in _LINEARS[options.parts])
        # (a variant's qk-norms, which ViTGeometry does not describe, are not counted)
        if options.parts == "all":  # norm1, norm2 and the LayerScale gammas
            per_block += 4 * geom.dim + 2 * geom.dim * geom.layer_scale
        return len(parse_placement(options.blocks, geom.depth)) * per_block + geom.head_params(num_classes)

    def frozen_prefix(self, model: nn.Module, options: SelectiveOptions) -> int:
        return min(parse_placement(options.blocks, len(backbone_blocks(model))))


register_method(SelectiveMethod())
