"""RepAdapter (Luo et al., 2023; luogen1996/RepAdapter): a linear adapter BEFORE attention and before the MLP, folded
into the next linear layer on export.

In each placed block the outputs of ``norm1`` and ``norm2`` (the inputs of ``attn.qkv`` and ``mlp.fc1``) become::

    h' = h + s * B(drop(A h))        A: Linear D -> r;  B: 1x1 conv r -> D with ``groups`` groups (block diagonal)

A is Xavier-uniform with zero bias; B's weight and bias are zero, so the model starts bitwise at the backbone.
Both adapters are linear in ``h`` (dropout is off in eval), so they merge into the following layer::

    W' = W (I + s B A),   b' = s W (B a_b + b_B) + b        B as the block-diagonal D x r matrix of the conv

after which the model is the plain timm architecture. The weights live in two
:class:`~adaptertune.methods.slots.BlockSlot` s per block, ``block.repadapter_attn`` (hook on ``norm1``) and
``block.repadapter_mlp`` (hook on ``norm2``); a task is a named set in both.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from ..config_checks import _as_float, _as_int, _as_probability, _check_placement_syntax, parse_placement
from ..errors import CheckpointError, ConfigError
from ..vit import backbone_blocks, backbone_width, head_parameter_names
from .flops import BlockCost, Extra, StepFlops, ViTGeometry, count_step, placed
from .registry import Method, register_method
from .slots import DEFAULT_SET, BlockSlot, copy_set_tensors

__all__ = [
    "RepAdapter",
    "RepAdapterMethod",
    "RepAdapterOptions",
    "add_repadapter",
    "merge_repadapter",
    "repadapter_param_count",
]


@dataclass
class RepAdapterOptions:
    """RepAdapter's options (YAML/CLI ``repadapter.*``, or the legacy ``adapter.*``).

    Args:
        rank: bottleneck width r (a multiple of ``groups``, at most the backbone's width); default 8.
        groups: groups of B's 1x1 convolution (block-diagonal B; R: 2).
        scale: s, the adapter output's factor (R tunes it per dataset in {0.1, 0.5, 1, 5, 10}); default 1.
        dropout: dropout on ``A h`` during training (R: 0.1).
        placement: which blocks get the two adapters: all, every:K, first:N, last:N or a list of indices.
    """

    rank: int = 8
    groups: int = 2
    scale: float = 1.0
    dropout: float = 0.1
    placement: str | list[int] = "all"
    section: ClassVar[str] = "repadapter"  # the method's config section, for messages

    def __post_init__(self) -> None:
        self.rank = _as_int(f"{self.section}.rank", self.rank, minimum=1)
        self.groups = _as_int(f"{self.section}.groups", self.groups, minimum=1)
        if self.rank % self.groups:
            raise ConfigError(
                f"`{self.section}.rank` {self.rank} must be a multiple of `{self.section}.groups` {self.groups}."
            )
        self.scale = _as_float(f"{self.section}.scale", self.scale)
        self.dropout = _as_probability(f"{self.section}.dropout", self.dropout)
        self.placement = _check_placement_syntax(self.placement)


class RepAdapter(nn.Module):
    """``h + s * B(drop(A h))``: (..., D) -> (..., D); B a grouped 1x1 convolution r -> D."""

    def __init__(self, dim: int, rank: int, groups: int = 2, scale: float = 1.0, dropout: float = 0.1) -> None:
        super().__init__()
        self.dim, self.rank, self.groups, self.scale = dim, rank, groups, scale
        self.A = nn.Linear(dim, rank)
        self.drop = nn.Dropout(dropout)
        self.B = nn.Conv1d(rank, dim, kernel_size=1, groups=groups)
        nn.init.xavier_uniform_(self.A.weight)
        nn.init.zeros_(self.A.bias)
        nn.init.zeros_(self.B.weight)  # the adapter adds exactly 0 at step 0
        nn.init.zeros_(self.B.bias)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        z = self.drop(self.A(h))  # (..., r)
        z = self.B(z.reshape(-1, self.rank, 1)).view(*h.shape[:-1], self.dim)  # each token a length-1 sequence
        return h + (self.scale * z).to(h.dtype)

    @torch.no_grad()
    def as_affine(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(M, c) in float64 with ``forward(h) = h M^T + c`` in eval: ``M = I + s B A``, ``c = s (B a_b + b_B)``."""
        g = self.groups
        w = self.B.weight.double()[..., 0]  # (D, r/g): output channel o reads input group o // (D/g)
        b_mat = torch.block_diag(*w.chunk(g, dim=0))  # (D, r)
        eye = torch.eye(self.dim, dtype=torch.float64, device=w.device)
        m = eye + self.scale * b_mat @ self.A.weight.double()
        c = self.scale * (b_mat @ self.A.bias.double() + self.B.bias.double())
        return m, c

    def extra_repr(self) -> str:
        return f"dim={self.dim}, rank={self.rank}, groups={self.groups}, scale={self.scale:g}"


class _AttnSlot(BlockSlot):
    """RepAdapter sets before attention (``block.repadapter_attn``): on ``norm1``'s output, the input of qkv."""

    attr, kind = "repadapter_attn", "RepAdapter (attention)"
    norm, linear = "norm1", "attn.qkv"

    @classmethod
    def hook_target(cls, block: nn.Module) -> nn.Module:
        norm = getattr(block, cls.norm, None)
        try:
            linear = block.get_submodule(cls.linear)
        except AttributeError:
            linear = None
        if not isinstance(norm, nn.Module) or not isinstance(linear, nn.Linear):
            raise ConfigError(
                f"Block {type(block).__name__} has no `{cls.norm}` and `{cls.linear}` Linear; RepAdapter needs a timm "
                "ViT block."
            )
        return norm

    def run(self, module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
        return module(output)


class _MlpSlot(_AttnSlot):
    """RepAdapter sets before the MLP (``block.repadapter_mlp``): on ``norm2``'s output, the input of fc1."""

    attr, kind = "repadapter_mlp", "RepAdapter (MLP)"
    norm, linear = "norm2", "mlp.fc1"


SLOTS = (_AttnSlot, _MlpSlot)


def add_repadapter(model: nn.Module, options: RepAdapterOptions | None = None, name: str = DEFAULT_SET) -> nn.Module:
    """Put RepAdapter set ``name`` before attention and before the MLP of every placed block; make it active and
    trainable (with the head), freeze everything else.

    Raises:
        ConfigError: rank larger than the width, a width not divisible by ``groups``, bad placement, ``name`` taken.
    """
    options = options or RepAdapterOptions()
    blocks = backbone_blocks(model)
    d = backbone_width(model)
    if options.rank > d or d % options.groups:
        raise ConfigError(
            f"`adapter.rank` {options.rank} / `adapter.groups` {options.groups} do not fit the backbone width {d}: "
            f"rank at most {d}, groups dividing {d}."
        )
    placed = parse_placement(options.placement, len(blocks))
    for slot in SLOTS:
        modules = {
            i: RepAdapter(d, options.rank, options.groups, options.scale, options.dropout)
            .to(next(blocks[i].parameters()).device)
            .train(blocks[i].training)
            for i in placed
        }
        try:
            slot.attach(model, name, modules)
        except ConfigError:
            if slot is _MlpSlot:
                _AttnSlot.detach(model, name)
            raise
        slot.activate(model, name)
    head = set(head_parameter_names(model))
    for n, p in model.named_parameters():
        p.requires_grad_(n in head or any(f".{s.attr}.{name}." in n for s in SLOTS))
    return model


@torch.no_grad()
def merge_repadapter(model: nn.Module) -> bool:
    """Fold each block's active RepAdapters into ``attn.qkv`` / ``mlp.fc1`` and remove every set (in place).

    Returns:
        Whether there was anything to merge.

    Raises:
        ConfigError: an adapted linear has no bias for the adapter's constant term.
    """
    blocks = backbone_blocks(model)
    found = False
    for slot in SLOTS:
        for i, s in slot.slots(model).items():
            found = True
            if s.active is None:
                continue
            m, c = s[s.active].as_affine()
            linear = blocks[i].get_submodule(slot.linear)
            if linear.bias is None:
                raise ConfigError(f"Block {i}'s `{slot.linear}` has no bias; RepAdapter's shift cannot be merged.")
            w = linear.weight.double()
            linear.bias.copy_((w @ c + linear.bias.double()).to(linear.bias.dtype))
            linear.weight.copy_((w @ m).to(linear.weight.dtype))
        slot.remove(model)
    return found


def repadapter_param_count(n_blocks: int, width: int, rank: int, groups: int = 2) -> int:
    """RepAdapter parameters: two adapters per block, each ``D r + r`` (A) + ``D r / groups + D`` (B)."""
    return n_blocks * 2 * (width * rank + rank + width * rank // groups + width)


class RepAdapterMethod(Method):
    """RepAdapter before attention and the MLP of each placed block; merges into qkv / fc1 for export.

    Default size: r = 8, groups 2, s = 1 on every block: P = 2 L (D r + r + D r / 2 + D) = 239,808 on ViT-B/16.
    """

    name = "repadapter"
    description = "RepAdapter: zero-init linear adapters before attention and MLP, merged into qkv/fc1 (r=8) + head"
    options = RepAdapterOptions
    defaults = {"lr": 1e-3, "weight_decay": 1e-4}  # Mai et al.'s grid: lr {1e-3, 1e-2} x wd {1e-4, 1e-3}
    lr_grid = (1e-3, 1e-2)
    shares_backbone = True
    plain_after_merge = True

    def build(self, model: nn.Module, options: RepAdapterOptions) -> nn.Module:
        return add_repadapter(model, options)

    def attach(
        self, backbone: nn.Module, task: str, options: RepAdapterOptions, tensors: dict[str, torch.Tensor], source: str
    ) -> None:
        try:
            add_repadapter(backbone, options, task)
        except ConfigError as e:
            raise ConfigError(f"Task '{task}' ({source}): {e}") from None
        own = {k: p for k, p in backbone.named_parameters() if any(f".{s.attr}.{task}." in k for s in SLOTS)}
        try:
            copy_set_tensors(own, tensors, f".{DEFAULT_SET}.", f".{task}.", "RepAdapter")
        except CheckpointError as e:
            self.detach(backbone, task)
            raise CheckpointError(f"'{source}': {e}") from None

    def activate(self, backbone: nn.Module, task: str | None) -> None:
        for slot in SLOTS:
            slot.activate(backbone, task)

    def detach(self, backbone: nn.Module, task: str) -> None:
        for slot in SLOTS:
            slot.detach(backbone, task)

    def merge(self, model: nn.Module) -> bool:
        return merge_repadapter(model)

    def step_flops(self, geom: ViTGeometry, options: RepAdapterOptions) -> StepFlops:
        """A (``D -> r``) then B at ``attn_in`` and ``mlp_in``; B, a 1x1 convolution with ``groups`` groups, costs
        the matmul ``r / groups -> D`` (each output channel reads its group's ``r / groups`` inputs)."""
        r, d = options.rank, geom.dim
        cost = BlockCost(
            extras=tuple(Extra(site, ((d, r), (r // options.groups, d))) for site in ("attn_in", "mlp_in"))
        )
        return count_step(geom, placed(geom, parse_placement(options.placement, geom.depth), cost))

    def trainable_params(self, geom: ViTGeometry, options: RepAdapterOptions, num_classes: int) -> int:
        blocks = len(parse_placement(options.placement, geom.depth))
        return repadapter_param_count(blocks, geom.dim, options.rank, options.groups) + geom.head_params(num_classes)

    def frozen_prefix(self, model: nn.Module, options: RepAdapterOptions) -> int:
        return min(parse_placement(options.placement, len(backbone_blocks(model))))


register_method(RepAdapterMethod())
