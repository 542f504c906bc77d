"""Adapter+ (Steitz & Roth, "Adapters Strike Back", CVPR 2024): a bottleneck after each placed block, where
AdapterTune's sits (the ``forward_post`` placement of visinf/adapter_plus)::

    y = x2 + c * DropPath(W_up(GELU(W_down x2)))        x2 = Block(x), all tokens; c in R^D per channel

No LayerNorm. Init "houlsby": both weights trunc-normal with std 0.01 truncated at +-2 sigma, biases 0, c = 1;
so the model does NOT start exactly at the backbone's logits (the update is small, not zero). It differs from
AdapterTune only in that init, the per-channel scale and the drop-path: the cleanest ablation partner. The
module is AdapterTune's :class:`~adaptertune.methods.adapter.Adapter` with those three changes, run by an
:class:`~adaptertune.methods.adapter.AdapterSlot` (``block.adapters``: adapter+ sets and AdapterTune sets
cannot share one backbone, as with the parallel adapters).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from timm.layers import DropPath
from torch import nn

from ..config_checks import _as_int, _as_probability, _check_placement_syntax, parse_placement
from ..errors import ConfigError
from ..vit import backbone_blocks, backbone_width
from .adapter import Adapter, AdapterMethod, AdapterSlot
from .flops import ViTGeometry
from .registry import register_method
from .slots import DEFAULT_SET

__all__ = [
    "AdapterPlus",
    "AdapterPlusMethod",
    "AdapterPlusOptions",
    "AdapterPlusSlot",
    "adapter_plus_param_count",
    "add_adapter_plus",
]

HOULSBY_STD = 0.01  # trunc-normal std of both weights, truncated at +-2 std (A's init="houlsby")


@dataclass
class AdapterPlusOptions:
    """Adapter+'s options (YAML/CLI ``adapter-plus.*``, or the legacy ``adapter.*``).

    Args:
        rank: bottleneck width r (1 <= r <= the backbone's width); default 8 (P = 165,984 on ViT-B/16).
        drop_path: drop-path (stochastic depth) rate on the adapter's output, per sample (A: 0.1).
        placement: which blocks get an adapter: all, every:K, first:N, last:N or a list of indices.
    """

    rank: int = 8
    drop_path: float = 0.1
    placement: str | list[int] = "all"
    section: ClassVar[str] = "adapter-plus"  # the method's config section, for messages

    def __post_init__(self) -> None:
        self.rank = _as_int(f"{self.section}.rank", self.rank, minimum=1)
        self.drop_path = _as_probability(f"{self.section}.drop_path", self.drop_path)
        self.placement = _check_placement_syntax(self.placement)


class AdapterPlus(Adapter):
    """``c * DropPath(W_up(GELU(W_down h)))``: (B, N, d) -> (B, N, d); Houlsby init, c = 1."""

    def __init__(self, dim: int, rank: int, drop_path: float = 0.1) -> None:
        super().__init__(dim, rank, init="houlsby", act="gelu")
        self.scale = nn.Parameter(torch.ones(dim))  # c, per channel
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def reset_parameters(self) -> None:
        for w in (self.down.weight, self.up.weight):
            nn.init.trunc_normal_(w, std=HOULSBY_STD, a=-2 * HOULSBY_STD, b=2 * HOULSBY_STD)
        nn.init.zeros_(self.down.bias)
        nn.init.zeros_(self.up.bias)
        if isinstance(getattr(self, "scale", None), nn.Parameter):
            nn.init.ones_(self.scale)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.drop_path(self.up(self.act(self.down(h))) * self.scale)  # per-sample mask commutes with c

    def residual(self, h: torch.Tensor) -> torch.Tensor:
        """``h + forward(h)`` in the dtype of ``h`` (under autocast the update is cast up to the stream's dtype)."""
        return self.forward(h).to(h.dtype).add_(h)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, rank={self.rank}, init=houlsby"


class AdapterPlusSlot(AdapterSlot):
    """Adapter+ sets of one block (``block.adapters``): the active one's residual on the block's output."""

    kind = "adapter+"


def add_adapter_plus(
    model: nn.Module, options: AdapterPlusOptions | None = None, name: str = DEFAULT_SET
) -> nn.Module:
    """Put an :class:`AdapterPlus` named ``name`` after every placed block; make the set active and trainable (with
    the head), freeze everything else.

    Raises:
        ConfigError: rank larger than the width, bad placement, ``name`` taken, other adapter kinds present.
    """
    return ADAPTER_PLUS.add_set(model, options or AdapterPlusOptions(), name)


class AdapterPlusMethod(AdapterMethod):
    """AdapterTune's method with the Adapter+ module: the same slot attribute, multi-task switch, state dicts,
    cache prefix (the first placed block) and FLOP sites (a bottleneck at ``out``; the scale is elementwise).

    Default size: r = 8 on every block, P = L * (2 D r + r + 2 D) = 165,984 on ViT-B/16 (L = 12, D = 768).
    """

    name = "adapter-plus"
    description = "Adapter+: bottleneck after each block, per-channel scale, drop-path, Houlsby init (r=8) + head"
    options = AdapterPlusOptions
    defaults = {"lr": 1e-3, "weight_decay": 1e-4}  # Adapters Strike Back's recipe (AdamW, no decay on 1-D)
    slot = AdapterPlusSlot

    def slot_modules(self, model: nn.Module, options: AdapterPlusOptions) -> dict[int, nn.Module]:
        blocks = backbone_blocks(model)
        d = backbone_width(model)
        if options.rank > d:
            raise ConfigError(f"`adapter.rank` {options.rank} is larger than the backbone width {d}; use 1..{d}.")
        placed = parse_placement(options.placement, len(blocks))
        device = next(blocks[0].parameters()).device
        # a new module takes its block's mode: drop-path must stay off when a task joins an eval-mode backbone
        return {
            i: AdapterPlus(d, options.rank, options.drop_path).to(device).train(blocks[i].training) for i in placed
        }

    def trainable_params(self, geom: ViTGeometry, options: AdapterPlusOptions, num_classes: int) -> int:
        blocks = len(parse_placement(options.placement, geom.depth))
        return adapter_plus_param_count(blocks, geom.dim, options.rank) + geom.head_params(num_classes)


def adapter_plus_param_count(n_blocks: int, width: int, rank: int) -> int:
    """Adapter+ parameters: ``n_blocks * (2*d*r + r + 2*d)`` (down weight+bias, up weight+bias, scale c)."""
    return n_blocks * (2 * width * rank + rank + 2 * width)


ADAPTER_PLUS = register_method(AdapterPlusMethod())
