"""Sequential bottleneck adapters: Houlsby et al. (ICML 2019) and Pfeiffer et al. (EACL 2021).

The adapter ``z -> z + s * up(dropout(ReLU(down(z))))`` sits on a sub-layer's output, inside its residual branch
(before the LayerScale and drop-path). For a timm ViT block::

    pfeiffer:  x2 = x1 + dp2(ls2(A(mlp(g))))                      (after the MLP only)
    houlsby:   x1 = x + dp1(ls1(A(attn(h)))),  x2 = x1 + dp2(ls2(A'(mlp(g))))

Init: Pfeiffer's ``down`` is Xavier-uniform with zero bias and ``up`` is zero (weight and bias), so it starts
exactly at the backbone's logits. Houlsby's weights are both Xavier-uniform and its biases ``N(0, 1e-6)`` (Mai et
al.'s init): the adapters add a non-zero update from the start, so the model does not start at the backbone's
logits. Not mergeable (ReLU).

Each adapter is run by a forward hook on ``block.attn`` / ``block.mlp``; a block's sets live in ``block.pfeiffer``
/ ``block.houlsby`` (:class:`PfeifferSlot`, :class:`HoulsbySlot`; a set's adapters under ``.mlp`` / ``.attn``), so
the backbone's ``state_dict`` keys never change and Houlsby and Pfeiffer tasks share one backbone.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from ..config_checks import _as_float, _as_int, _as_probability
from ..errors import ConfigError
from ..vit import backbone_blocks, backbone_width
from .flops import BlockCost, StepFlops, ViTGeometry, bottleneck, count_step, placed
from .registry import Method, register_method
from .slots import BlockSlot

__all__ = [
    "Bottleneck",
    "BottleneckOptions",
    "BottleneckSlot",
    "HoulsbyMethod",
    "HoulsbySlot",
    "PfeifferMethod",
    "PfeifferSlot",
]

BOTTLENECK_INITS = ("zero", "houlsby")


@dataclass
class BottleneckOptions:
    """Options of the Houlsby and Pfeiffer adapters (YAML/CLI ``adapter.*``).

    Args:
        rank: bottleneck width r.
        scale: s, the adapter output's scale.
        dropout: dropout on the bottleneck activations during training.
    """

    rank: int = 8
    scale: float = 1.0
    dropout: float = 0.1

    def __post_init__(self) -> None:
        self.rank = _as_int("adapter.rank", self.rank, minimum=1)
        self.scale = _as_float("adapter.scale", self.scale)
        self.dropout = _as_probability("adapter.dropout", self.dropout)


class Bottleneck(nn.Module):
    """``z + s * up(dropout(ReLU(down(z))))``: (B, T, D) -> (B, T, D).

    Args:
        init: ``zero`` (down Xavier-uniform, zero bias; up zero) or ``houlsby`` (both weights Xavier-uniform,
            biases N(0, 1e-6)).
    """

    def __init__(self, dim: int, rank: int, scale: float, dropout: float, init: str) -> None:
        super().__init__()
        self.scale, self.init = scale, init
        self.down = nn.Linear(dim, rank)
        self.drop = nn.Dropout(dropout)
        self.up = nn.Linear(rank, dim)
        nn.init.xavier_uniform_(self.down.weight)
        if init == "zero":
            nn.init.zeros_(self.down.bias)
            nn.init.zeros_(self.up.weight)  # the adapter adds exactly 0 at step 0 (weight and bias both zero)
            nn.init.zeros_(self.up.bias)
        else:
            nn.init.xavier_uniform_(self.up.weight)
            nn.init.normal_(self.down.bias, std=1e-6)
            nn.init.normal_(self.up.bias, std=1e-6)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        update = self.up(self.drop(torch.relu(self.down(z))))
        return z + (update * self.scale).to(z.dtype)

    def extra_repr(self) -> str:
        return f"scale={self.scale:g}, init={self.init}"


class BottleneckSlot(BlockSlot):
    """Adapter sets of one block, one adapter per sub-layer in :attr:`sites` (a forward hook on ``block.<site>``);
    a set is a ``ModuleDict`` of :class:`Bottleneck` keyed by site."""

    sites: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def hook_targets(cls, block: nn.Module) -> dict[str, nn.Module]:
        if missing := [s for s in cls.sites if not isinstance(getattr(block, s, None), nn.Module)]:
            raise ConfigError(
                f"Block {type(block).__name__} has no `.{'`, `.'.join(missing)}`; {cls.kind}s need a timm ViT block."
            )
        return {s: getattr(block, s) for s in cls.sites}

    def run_at(self, name: str, target: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
        return self[self.active][name](output)


class PfeifferSlot(BottleneckSlot):
    """Pfeiffer sets of one block (``block.pfeiffer``): an adapter on the MLP output."""

    attr, kind, sites = "pfeiffer", "Pfeiffer adapter", ("mlp",)


class HoulsbySlot(BottleneckSlot):
    """Houlsby sets of one block (``block.houlsby``): adapters on the attention output and the MLP output."""

    attr, kind, sites = "houlsby", "Houlsby adapter", ("attn", "mlp")


class _BottleneckMethod(Method):
    """Pfeiffer and Houlsby: the same options and adapter; the slot (its sites) and ``init`` differ."""

    options = BottleneckOptions
    defaults = {"lr": 1e-3, "weight_decay": 1e-4}  # Mai et al.'s grid: lr {1e-3, 1e-2} x wd {1e-4, 1e-3}
    lr_grid = (1e-3, 3e-3, 1e-2)
    shares_backbone = True
    slot: ClassVar[type[BottleneckSlot]]
    init: ClassVar[str] = "zero"

    def slot_modules(self, model: nn.Module, options: BottleneckOptions) -> dict[int, nn.Module]:
        """Block index -> fresh adapters, one per site of the slot."""
        d = backbone_width(model)
        if options.rank > d:
            raise ConfigError(f"`adapter.rank` {options.rank} is larger than the backbone width {d}; use 1..{d}.")

        def adapter() -> Bottleneck:
            return Bottleneck(d, options.rank, options.scale, options.dropout, self.init)

        return {i: nn.ModuleDict({s: adapter() for s in self.slot.sites}) for i in range(len(backbone_blocks(model)))}

    def step_flops(self, geom: ViTGeometry, options: BottleneckOptions) -> StepFlops:
        """A bottleneck on each sub-layer output the slot holds (``attn_out``, ``mlp_out``), in every block."""
        cost = BlockCost(extras=tuple(bottleneck(f"{s}_out", geom.dim, options.rank) for s in self.slot.sites))
        return count_step(geom, placed(geom, range(geom.depth), cost))

    def trainable_params(self, geom: ViTGeometry, options: BottleneckOptions, num_classes: int) -> int:
        d, r = geom.dim, options.rank  # down D r + r, up r D + D per adapter
        return geom.depth * len(self.slot.sites) * (2 * d * r + r + d) + geom.head_params(num_classes)

    def frozen_prefix(self, model: nn.Module, options: BottleneckOptions) -> int:
        return 0  # adapters in every block


class PfeifferMethod(_BottleneckMethod):
    """Pfeiffer adapters at rank 8 (default), after every block's MLP: L(2Dr + r + D) parameters, 156,768 on
    ViT-B/16. Exact start (zero up-projection)."""

    name = "pfeiffer"
    description = "Pfeiffer: frozen backbone + zero-init bottleneck adapter after each MLP (rank 8) + head"
    slot = PfeifferSlot


class HoulsbyMethod(_BottleneckMethod):
    """Houlsby adapters at rank 8 (default), after every block's attention and MLP: 2L(2Dr + r + D) parameters,
    313,536 on ViT-B/16. Xavier-initialised both ways: not an exact start."""

    name = "houlsby"
    description = "Houlsby: frozen backbone + bottleneck adapters after each attention and MLP (rank 8) + head"
    slot = HoulsbySlot
    init = "houlsby"


register_method(PfeifferMethod())
register_method(HoulsbyMethod())
