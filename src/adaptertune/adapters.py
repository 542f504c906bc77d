"""Zero-initialized residual low-rank adapters on the blocks of a frozen ViT.

After each chosen transformer block ``l`` (paper: arXiv 2603.14706)::

    x_{l+1} = h_l + alpha * W_up(act(W_down h_l))        h_l = Block_l(x_l), all tokens

``W_down`` is Xavier-uniform with zero bias and ``W_up`` is zero (weight and bias), so at step 0 the
adapted network computes exactly the pretrained function.

Adapters are attached without touching the backbone's own parameters: each adapted block gets a child
``block.adapters`` (a ``ModuleDict`` of named adapter sets) and a forward hook that adds the active set's
output. The backbone's ``state_dict`` keys are unchanged (new keys only appear under ``...adapters...``),
and timm features (``forward_features``, ``forward_head``, ``reset_classifier``,
``set_grad_checkpointing``) keep working because the blocks themselves are not replaced.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from .config import AdapterConfig, parse_placement
from .errors import CheckpointError, ConfigError

__all__ = [
    "Adapter",
    "AdapterSlot",
    "ParamCount",
    "adapted_blocks",
    "adapter_param_count",
    "adapter_state_dict",
    "add_adapters",
    "attach_adapter_set",
    "backbone_blocks",
    "backbone_width",
    "disable_adapters",
    "head_parameter_names",
    "list_adapter_sets",
    "load_adapter_state_dict",
    "remove_adapters",
    "set_active",
    "trainable_parameters",
]

DEFAULT_SET = "default"
_ACTS = {"gelu": nn.GELU, "relu": nn.ReLU, "silu": nn.SiLU, "identity": nn.Identity}


class Adapter(nn.Module):
    """Bottleneck ``alpha * W_up(act(W_down h))``: (B, N, d) -> (B, N, d)."""

    def __init__(
        self,
        dim: int,
        rank: int,
        alpha: float = 1.0,
        init: str = "zero",
        dropout: float = 0.0,
        act: str = "gelu",
    ) -> None:
        super().__init__()
        self.dim, self.rank, self.alpha, self.init = dim, rank, alpha, init
        self.down = nn.Linear(dim, rank)
        self.act = _ACTS[act]()
        self.drop = nn.Dropout(dropout)
        self.up = nn.Linear(rank, dim)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.xavier_uniform_(self.down.weight)
        nn.init.zeros_(self.down.bias)
        nn.init.zeros_(self.up.bias)
        if self.init == "zero":
            nn.init.zeros_(self.up.weight)  # the method: the adapter adds exactly 0 at step 0
        elif self.init == "small":
            nn.init.normal_(self.up.weight, std=1e-4)
        else:  # "random": the naive baseline the paper argues against
            nn.init.xavier_uniform_(self.up.weight)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        z = self.act(self.down(h))  # (B, N, r)
        if self.drop.p > 0:
            z = self.drop(z)
        z = self.up(z)
        return z if self.alpha == 1.0 else z * self.alpha  # no extra pass over (B, N, d) at the default alpha

    def residual(self, h: torch.Tensor) -> torch.Tensor:
        """``h + forward(h)`` in the dtype of ``h``; with GELU, no active dropout and no autocast, one fused
        autograd function."""
        fusable = (
            isinstance(self.act, nn.GELU)
            and self.act.approximate == "none"
            and (self.drop.p == 0 or not self.training)
            and h.dtype == self.down.weight.dtype
            and not torch.is_autocast_enabled(h.device.type)
        )
        if fusable:
            return _ResidualAdapter.apply(
                h, self.down.weight, self.down.bias, self.up.weight, self.up.bias, self.alpha
            )
        # autocast runs the adapter's linears in bf16/fp16 while the residual stream ``h`` stays fp32: cast the
        # update up to the stream's dtype before adding, so the stream keeps its dtype and 0 + h is h exactly
        return self.forward(h).to(h.dtype).add_(h)  # in place into the adapter's fresh output

    def extra_repr(self) -> str:
        return f"dim={self.dim}, rank={self.rank}, alpha={self.alpha:g}, init={self.init}"


class _ResidualAdapter(torch.autograd.Function):
    """``h + alpha * (gelu(h W_d^T + b_d) W_u^T + b_u)`` over the (B*N, d) rows, with a written-out backward.

    ``h`` is the accumulator of the up-projection's ``addmm`` and the gradient of ``h`` accumulates inside the
    down-projection's backward ``addmm``, so neither direction writes an extra (B*N, d) buffer; only ``h`` and
    the (B*N, r) pre-activation are saved. Same values as the module path.
    """

    @staticmethod
    def forward(ctx, h, w_down, b_down, w_up, b_up, alpha: float):  # type: ignore[override]
        h2 = h.reshape(-1, h.shape[-1])  # (M, d)
        a = torch.addmm(b_down, h2, w_down.t())  # (M, r)
        out = torch.addmm(h2, F.gelu(a), w_up.t(), alpha=alpha)  # h + alpha * z W_u^T
        out.add_(b_up, alpha=alpha)
        ctx.save_for_backward(h2, a, w_down, w_up)
        ctx.alpha = alpha
        return out.view(h.shape)

    @staticmethod
    def backward(ctx, g):  # type: ignore[override]
        h2, a, w_down, w_up = ctx.saved_tensors
        need_h, need_wd, need_bd, need_wu, need_bu, _ = ctx.needs_input_grad
        g2 = g.reshape(-1, g.shape[-1])  # (M, d)
        gs = g2 if ctx.alpha == 1.0 else g2 * ctx.alpha  # gradient at the up-projection's output
        grad_wu = gs.t().mm(F.gelu(a)) if need_wu else None
        grad_bu = gs.sum(0) if need_bu else None
        da = torch.ops.aten.gelu_backward(gs.mm(w_up), a)  # (M, r)
        grad_wd = da.t().mm(h2) if need_wd else None
        grad_bd = da.sum(0) if need_bd else None
        grad_h = torch.addmm(g2, da, w_down).view(g.shape) if need_h else None  # identity path + adapter path
        return grad_h, grad_wd, grad_bd, grad_wu, grad_bu, None


class AdapterSlot(nn.ModuleDict):
    """Named adapter sets of one block; the forward hook adds the active one's output."""

    def __init__(self) -> None:
        super().__init__()
        self.active: str | None = None

    def hook(self, module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
        if self.active is None or self.active not in self:
            return output
        return self[self.active].residual(output)  # (B, N, d) residual on all tokens


# ---------------------------------------------------------------- model introspection
def backbone_blocks(model: nn.Module) -> nn.Sequential | nn.ModuleList:
    """The transformer blocks of a timm ViT-family model (``model.blocks``)."""
    blocks = getattr(model, "blocks", None)
    if not isinstance(blocks, nn.Sequential | nn.ModuleList) or len(blocks) == 0:
        raise ConfigError(
            f"Model {type(model).__name__} has no `.blocks` sequence of transformer blocks; adaptertune supports "
            "timm ViT-family models (vit_*, deit_*, vit_*_dinov2, eva_*, ...)."
        )
    return blocks


def backbone_width(model: nn.Module) -> int:
    """Token width d of the residual stream."""
    for attr in ("embed_dim", "num_features"):
        d = getattr(model, attr, None)
        if isinstance(d, int) and d > 0:
            return d
    raise ConfigError(f"Cannot tell the token width of {type(model).__name__}: it has no `embed_dim`.")


def head_parameter_names(model: nn.Module) -> list[str]:
    """Qualified names of the classifier's parameters (``get_classifier()`` in timm)."""
    head = model.get_classifier() if hasattr(model, "get_classifier") else getattr(model, "head", None)
    if not isinstance(head, nn.Module):
        return []
    ids = {id(p) for p in head.parameters()}
    return [n for n, p in model.named_parameters() if id(p) in ids]


def _slots(model: nn.Module) -> dict[int, AdapterSlot]:
    return {
        i: b.adapters
        for i, b in enumerate(backbone_blocks(model))
        if isinstance(getattr(b, "adapters", None), AdapterSlot)
    }


def adapted_blocks(model: nn.Module, name: str | None = None) -> list[int]:
    """Indices of blocks holding adapter set ``name`` (default: the active set)."""
    name = name or _active_name(model)
    return [i for i, s in _slots(model).items() if name in s]


def list_adapter_sets(model: nn.Module) -> list[str]:
    """Names of the adapter sets attached to ``model``."""
    return sorted({n for s in _slots(model).values() for n in s})


def _active_name(model: nn.Module) -> str | None:
    actives = {s.active for s in _slots(model).values()} - {None}
    return actives.pop() if len(actives) == 1 else None


# ---------------------------------------------------------------- attach / switch / remove
def add_adapters(model: nn.Module, config: AdapterConfig | None = None, name: str = DEFAULT_SET) -> nn.Module:
    """Attach a set of adapters to ``model`` in place, make it active and freeze the backbone.

    Only the new adapters and the classifier head stay trainable.

    Args:
        model: a timm ViT-family model (anything with ``.blocks`` and ``embed_dim``).
        config: rank, alpha, init, dropout, placement (default ``AdapterConfig()``).
        name: name of this adapter set (several sets can live on one backbone; see ``set_active``).

    Returns:
        The same model.

    Raises:
        ConfigError: rank larger than the width, bad placement, or ``name`` already used.

    Example:
        >>> model = timm.create_model("vit_tiny_patch16_224", img_size=32, patch_size=4, num_classes=10)
        >>> add_adapters(model, AdapterConfig(rank=8, placement="last:6"))
        >>> trainable_parameters(model).trainable
    """
    return attach_adapter_set(model, config, name, _serial_slot)


def _serial_slot(block: nn.Module) -> AdapterSlot:
    """The block's slot of serial adapters (added on the block's output), created on first use."""
    slot = getattr(block, "adapters", None)
    if slot is None:
        slot = block.adapters = AdapterSlot()
        block.register_forward_hook(slot.hook)
    return slot


def attach_adapter_set(
    model: nn.Module, config: AdapterConfig | None, name: str, slot_for: Callable[[nn.Module], AdapterSlot]
) -> nn.Module:
    """Put an ``Adapter`` named ``name`` into ``slot_for(block)`` of every placed block; make the set active and
    trainable (with the head) and freeze everything else. Shared by serial and parallel adapters."""
    config = config or AdapterConfig()
    blocks = backbone_blocks(model)
    d = backbone_width(model)
    if config.rank > d:
        raise ConfigError(f"`adapter.rank` {config.rank} is larger than the backbone width {d}; use 1..{d}.")
    if name in list_adapter_sets(model):
        raise ConfigError(f"An adapter set named '{name}' already exists; remove it first or pick another name.")
    placed = parse_placement(config.placement, len(blocks))
    for p in model.parameters():
        p.requires_grad_(False)
    for i in placed:
        block = blocks[i]
        slot_for(block)[name] = Adapter(d, config.rank, config.scale, config.init, config.dropout, config.act).to(
            next(block.parameters()).device
        )
    set_active(model, name)
    head = set(head_parameter_names(model))
    for n, p in model.named_parameters():
        if n in head or f".adapters.{name}." in n:
            p.requires_grad_(True)
    return model


def set_active(model: nn.Module, name: str | None) -> None:
    """Make adapter set ``name`` active on every block (``None`` disables all adapters)."""
    slots = _slots(model)
    if name is not None and name not in list_adapter_sets(model):
        raise ConfigError(
            f"No adapter set named '{name}'; this model has: {', '.join(list_adapter_sets(model)) or 'none'}."
        )
    for slot in slots.values():
        slot.active = name


def disable_adapters(model: nn.Module) -> None:
    """Run the plain backbone (adapters stay attached; ``set_active`` turns them back on)."""
    set_active(model, None)


def remove_adapters(model: nn.Module, name: str = DEFAULT_SET) -> None:
    """Delete adapter set ``name``; blocks left with no set lose their slot and hook."""
    if name not in list_adapter_sets(model):
        raise ConfigError(
            f"No adapter set named '{name}'; this model has: {', '.join(list_adapter_sets(model)) or 'none'}."
        )
    for block in backbone_blocks(model):
        slot = getattr(block, "adapters", None)
        if not isinstance(slot, AdapterSlot) or name not in slot:
            continue
        del slot[name]
        if slot.active == name:
            slot.active = None
        if len(slot) == 0:
            for key, fn in list(block._forward_hooks.items()):
                if getattr(fn, "__self__", None) is slot:
                    del block._forward_hooks[key]
            del block.adapters


# ---------------------------------------------------------------- counts (pure) and state dicts
class ParamCount(NamedTuple):
    trainable: int
    total: int

    @property
    def percent(self) -> float:
        return 100.0 * self.trainable / max(self.total, 1)


def adapter_param_count(n_blocks: int, width: int, rank: int) -> int:
    """Adapter parameters: ``n_blocks * (2*d*r + r + d)`` (down weight+bias, up weight+bias)."""
    return n_blocks * (2 * width * rank + rank + width)


def trainable_parameters(model: nn.Module) -> ParamCount:
    """Trainable and total parameter counts (tied parameters counted once)."""
    params = {id(p): p for p in model.parameters()}.values()
    return ParamCount(sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params))


def adapter_state_dict(
    model: nn.Module, name: str | None = None, include_head: bool = True
) -> dict[str, torch.Tensor]:
    """Tensors of one adapter set (``adapters.{block}.{down,up}.{weight,bias}``) plus the head.

    Keys do not depend on the set's name, so a file saved from set ``a`` loads into set ``b``.
    """
    name = name or _active_name(model)
    if name is None:
        raise ConfigError("The model has no active adapter set; pass `name=` or call add_adapters first.")
    sd = {}
    for i in adapted_blocks(model, name):
        for k, v in backbone_blocks(model)[i].adapters[name].state_dict().items():
            sd[f"adapters.{i}.{k}"] = v.detach().clone()
    if include_head:
        params = dict(model.named_parameters())
        for n in head_parameter_names(model):
            sd[n] = params[n].detach().clone()
    return sd


def load_adapter_state_dict(model: nn.Module, state_dict: dict[str, torch.Tensor], name: str | None = None) -> None:
    """Load tensors saved by :func:`adapter_state_dict` into adapter set ``name`` (default: active).

    Raises:
        CheckpointError: placement, rank, width (backbone) or head shape differ; names both sides.
    """
    expected = adapter_state_dict(model, name, include_head=any(not k.startswith("adapters.") for k in state_dict))
    name = name or _active_name(model)

    def blocks_of(keys) -> list[int]:
        return sorted({int(k.split(".")[1]) for k in keys if k.startswith("adapters.")})

    if blocks_of(state_dict) != blocks_of(expected):
        raise CheckpointError(
            f"Adapter placement mismatch: the file has adapters on blocks {blocks_of(state_dict)}, "
            f"the model on blocks {blocks_of(expected)}."
        )
    if set(state_dict) != set(expected):
        extra, missing = sorted(set(state_dict) - set(expected)), sorted(set(expected) - set(state_dict))
        raise CheckpointError(
            f"Adapter file keys do not match the model: unexpected {extra[:4]}, missing {missing[:4]}."
        )
    for k, v in state_dict.items():
        want = expected[k].shape
        if v.shape == want:
            continue
        if k.endswith("down.weight"):
            if v.shape[1] != want[1]:
                raise CheckpointError(
                    f"Backbone width mismatch: the file's adapters are for width d={v.shape[1]}, the model has "
                    f"d={want[1]} (a different backbone)."
                )
            raise CheckpointError(f"Adapter rank mismatch: the file has rank {v.shape[0]}, the model rank {want[0]}.")
        if not k.startswith("adapters."):
            raise CheckpointError(
                f"Head shape mismatch for '{k}': the file has {tuple(v.shape)}, the model {tuple(want)} "
                "(different number of classes or width)."
            )
        raise CheckpointError(f"Shape mismatch for '{k}': the file has {tuple(v.shape)}, the model {tuple(want)}.")
    params = dict(model.named_parameters())
    blocks = backbone_blocks(model)
    with torch.no_grad():
        for k, v in state_dict.items():
            if k.startswith("adapters."):
                _, i, sub = k.split(".", 2)
                target = blocks[int(i)].adapters[name].get_parameter(sub)
            else:
                target = params[k]
            target.copy_(v)
