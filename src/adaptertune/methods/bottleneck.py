"""Sequential bottleneck adapters: Houlsby et al. (ICML 2019) and Pfeiffer et al. (EACL 2021).

The adapter ``z -> z + s * up(dropout(ReLU(down(z))))`` sits on a sub-layer's output, inside its residual branch
(before the LayerScale and drop-path). For a timm ViT block::

    pfeiffer:  x2 = x1 + dp2(ls2(A(mlp(g))))                      (after the MLP only)
    houlsby:   x1 = x + dp1(ls1(A(attn(h)))),  x2 = x1 + dp2(ls2(A'(mlp(g))))

Init: Pfeiffer's ``down`` is Xavier-uniform with zero bias and ``up`` is zero (weight and bias), so it starts
exactly at the backbone's logits. Houlsby's weights are both Xavier-uniform and its biases ``N(0, 1e-6)`` (Mai et
al.'s init): the adapters add a non-zero update from the start, so the model does not start at the backbone's
logits. Not mergeable (ReLU).

Each adapter is run by a forward hook on ``block.attn`` / ``block.mlp``; a block's sets live in
``block.attn_adapters`` / ``block.mlp_adapters`` (:class:`AttnBottleneckSlot`, :class:`MlpBottleneckSlot`), so the
backbone's ``state_dict`` keys never change and Houlsby and Pfeiffer tasks share one backbone.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from ..config_checks import _as_float, _as_int
from ..errors import CheckpointError, ConfigError
from ..vit import backbone_blocks, backbone_width, head_parameter_names
from .registry import Method, register_method
from .slots import BlockSlot

__all__ = [
    "AttnBottleneckSlot",
    "Bottleneck",
    "BottleneckOptions",
    "HoulsbyMethod",
    "MlpBottleneckSlot",
    "PfeifferMethod",
]

DEFAULT_SET = "default"
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
        self.dropout = _as_float("adapter.dropout", self.dropout, minimum=0.0)
        if self.dropout >= 1:
            raise ConfigError(f"`adapter.dropout` must be in [0, 1), got {self.dropout:g}.")


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


def _part(block: nn.Module, name: str) -> nn.Module:
    part = getattr(block, name, None)
    if not isinstance(part, nn.Module):
        raise ConfigError(f"Block {type(block).__name__} has no `.{name}`; bottleneck adapters need a timm ViT block.")
    return part


class AttnBottleneckSlot(BlockSlot):
    """Adapter sets on the attention output of one block (``block.attn_adapters``; Houlsby's first adapter)."""

    attr = "attn_adapters"
    kind = "bottleneck adapter"

    @classmethod
    def hook_target(cls, block: nn.Module) -> nn.Module:
        return _part(block, "attn")

    def run(self, module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
        return module(output)


class MlpBottleneckSlot(BlockSlot):
    """Adapter sets on the MLP output of one block (``block.mlp_adapters``; Pfeiffer's, Houlsby's second)."""

    attr = "mlp_adapters"
    kind = "bottleneck adapter"

    @classmethod
    def hook_target(cls, block: nn.Module) -> nn.Module:
        return _part(block, "mlp")

    def run(self, module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
        return module(output)


class _BottleneckMethod(Method):
    """Pfeiffer and Houlsby: the same options and adapter; ``slots`` and ``init`` differ."""

    options = BottleneckOptions
    defaults = {"lr": 1e-3, "weight_decay": 1e-4}  # Mai et al.'s grid: lr {1e-3, 1e-2} x wd {1e-4, 1e-3}
    lr_grid = (1e-3, 3e-3, 1e-2)
    shares_backbone = True
    slots: ClassVar[tuple[type[BlockSlot], ...]] = ()
    init: ClassVar[str] = "zero"

    def adapters(self, model: nn.Module, options: BottleneckOptions) -> dict[int, Bottleneck]:
        """Block index -> a fresh adapter (on the block's device and in its train/eval mode)."""
        d = backbone_width(model)
        if options.rank > d:
            raise ConfigError(f"`adapter.rank` {options.rank} is larger than the backbone width {d}; use 1..{d}.")
        return {
            i: Bottleneck(d, options.rank, options.scale, options.dropout, self.init)
            .to(next(b.parameters()).device)
            .train(b.training)
            for i, b in enumerate(backbone_blocks(model))
        }

    def _attach(self, model: nn.Module, name: str, options: BottleneckOptions) -> None:
        done: list[type[BlockSlot]] = []
        try:
            for slot in self.slots:
                slot.attach(model, name, self.adapters(model, options))
                done.append(slot)
        except ConfigError:
            for slot in done:
                slot.detach(model, name)
            raise

    def build(self, model: nn.Module, options: BottleneckOptions) -> nn.Module:
        self._attach(model, DEFAULT_SET, options)
        self.activate(model, DEFAULT_SET)
        head = set(head_parameter_names(model))
        marks = tuple(f".{slot.attr}.{DEFAULT_SET}." for slot in self.slots)
        for n, p in model.named_parameters():
            p.requires_grad_(n in head or any(m in n for m in marks))
        return model

    def attach(
        self,
        backbone: nn.Module,
        task: str,
        options: BottleneckOptions,
        tensors: dict[str, torch.Tensor],
        source: str,
    ) -> None:
        try:
            self._attach(backbone, task, options)
        except ConfigError as e:
            raise ConfigError(f"Task '{task}' ({source}): {e}") from None
        try:
            by_attr: dict[str, dict[str, torch.Tensor]] = {slot.attr: {} for slot in self.slots}
            for k, v in tensors.items():
                parts = k.split(".")
                if len(parts) < 5 or parts[0] != "blocks" or parts[2] not in by_attr:
                    raise CheckpointError(f"it holds '{k}', not a {self.name} adapter tensor of a timm ViT block.")
                by_attr[parts[2]][k] = v
            for slot in self.slots:
                _load_set(backbone, slot, task, by_attr[slot.attr])
        except CheckpointError as e:
            self.detach(backbone, task)
            raise CheckpointError(f"'{source}': {e}") from None

    def activate(self, backbone: nn.Module, task: str | None) -> None:
        for slot in (AttnBottleneckSlot, MlpBottleneckSlot):  # a Pfeiffer task turns the attention adapters off
            slot.activate(backbone, task if task in slot.set_names(backbone) else None)

    def detach(self, backbone: nn.Module, task: str) -> None:
        for slot in self.slots:
            if task in slot.set_names(backbone):
                slot.detach(backbone, task)


def _load_set(model: nn.Module, slot: type[BlockSlot], name: str, tensors: dict[str, torch.Tensor]) -> None:
    """Copy a file's ``blocks.{i}.{attr}.{set}.{tensor}`` into set ``name`` (keys and shapes must match)."""
    blocks = backbone_blocks(model)
    want = {
        f"{i}.{k}": p
        for i in slot.blocks_of(model, name)
        for k, p in blocks[i].get_submodule(slot.attr)[name].named_parameters()
    }
    got = {}
    for k, v in tensors.items():
        parts = k.split(".")
        if len(parts) < 5 or parts[0] != "blocks" or parts[2] != slot.attr:
            raise CheckpointError(f"it holds '{k}', not a {slot.kind} tensor of a timm ViT block.")
        got[f"{parts[1]}.{'.'.join(parts[4:])}"] = v
    if set(got) != set(want):
        extra, missing = sorted(set(got) - set(want)), sorted(set(want) - set(got))
        raise CheckpointError(
            f"its {slot.kind} tensors do not match the options: unexpected {extra[:3]}, missing {missing[:3]}."
        )
    for k, v in got.items():
        if v.shape != want[k].shape:
            raise CheckpointError(f"'{k}' is {tuple(v.shape)} in the file, {tuple(want[k].shape)} in the model.")
    with torch.no_grad():
        for k, v in got.items():
            want[k].copy_(v)


class PfeifferMethod(_BottleneckMethod):
    """Pfeiffer adapters at rank 8 (default), after every block's MLP: L(2Dr + r + D) parameters, 156,768 on
    ViT-B/16. Exact start (zero up-projection)."""

    name = "pfeiffer"
    description = "Pfeiffer: frozen backbone + zero-init bottleneck adapter after each MLP (rank 8) + head"
    slots = (MlpBottleneckSlot,)


class HoulsbyMethod(_BottleneckMethod):
    """Houlsby adapters at rank 8 (default), after every block's attention and MLP: 2L(2Dr + r + D) parameters,
    313,536 on ViT-B/16. Xavier-initialised both ways: not an exact start."""

    name = "houlsby"
    description = "Houlsby: frozen backbone + bottleneck adapters after each attention and MLP (rank 8) + head"
    slots = (AttnBottleneckSlot, MlpBottleneckSlot)
    init = "houlsby"


register_method(PfeifferMethod())
register_method(HoulsbyMethod())
