"""AdapterTune on a backbone: attach adapter sets, switch and remove them, their parameter count and state dicts.

Each adapted block holds its sets in ``block.adapters`` (an :class:`~.layer.AdapterSlot`), run by a forward
hook on the block, so the backbone's ``state_dict`` keys are unchanged (new keys only appear under
``...adapters...``) and timm features (``forward_features``, ``forward_head``, ``reset_classifier``,
``set_grad_checkpointing``) keep working. The same functions switch, remove and save the parallel adapters
(:mod:`adaptertune.methods.parallel`), whose slot lives under the same name.
"""

from __future__ import annotations

from functools import partial

import torch
from torch import nn

from ...config_checks import parse_placement
from ...errors import CheckpointError, ConfigError
from ...vit import backbone_blocks, backbone_width, head_parameter_names
from ..slots import DEFAULT_SET, BlockSlot
from .layer import Adapter, AdapterSlot
from .options import AdapterConfig, adapter_scale

__all__ = [
    "adapted_blocks",
    "adapter_modules",
    "adapter_param_count",
    "adapter_state_dict",
    "add_adapters",
    "attach_adapter_set",
    "disable_adapters",
    "list_adapter_sets",
    "load_adapter_state_dict",
    "remove_adapters",
    "set_active",
    "set_active_rank",
]


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
    return attach_adapter_set(model, config, name, AdapterSlot)


def attach_adapter_set(model: nn.Module, config: AdapterConfig | None, name: str, slot: type[BlockSlot]) -> nn.Module:
    """Put an ``Adapter`` named ``name`` into the ``slot`` of every placed block; make the set active and trainable
    (with the head) and freeze everything else. Shared by serial and parallel adapters."""
    slot.attach(model, name, adapter_modules(model, config or AdapterConfig()))
    slot.activate(model, name)
    head = set(head_parameter_names(model))
    for n, p in model.named_parameters():
        p.requires_grad_(n in head or f".{slot.attr}.{name}." in n)
    return model


def adapter_modules(model: nn.Module, config: AdapterConfig) -> dict[int, Adapter]:
    """A new ``Adapter`` for each block ``config`` places, on the block's device.

    Raises:
        ConfigError: the rank is larger than the width; a bad placement.
    """
    blocks = backbone_blocks(model)
    d = backbone_width(model)
    if config.rank > d:
        raise ConfigError(f"`adapter.rank` {config.rank} is larger than the backbone width {d}; use 1..{d}.")
    grid = config.grid if config.nested else ()
    scale_at = partial(adapter_scale, config.alpha, scaling=config.scaling) if config.nested else None
    return {
        i: Adapter(d, config.rank, config.scale, config.init, config.dropout, config.act, grid, scale_at).to(
            next(blocks[i].parameters()).device
        )
        for i in parse_placement(config.placement, len(blocks))
    }


def set_active(model: nn.Module, name: str | None) -> None:
    """Make adapter set ``name`` active on every block (``None`` disables all adapters)."""
    AdapterSlot.activate(model, name)


def set_active_rank(model: nn.Module, rank: int | None) -> None:
    """Run every nested adapter of ``model`` (all sets) at its first ``rank`` units outside training: None = full
    rank, 0 = the adapters off (the backbone and the head). Training steps keep sampling their own rank.

    Raises:
        ConfigError: the model has no nested adapter, or ``rank`` is not in 0..their rank.
    """
    adapters = [m for m in model.modules() if isinstance(m, Adapter)]
    if not any(a.grid for a in adapters):
        raise ConfigError(
            "The model has no nested adapters (`adapter.nested: true`); it runs at its trained rank only."
        )
    for a in adapters:
        a.set_active_rank(rank)


def disable_adapters(model: nn.Module) -> None:
    """Run the plain backbone (adapters stay attached; ``set_active`` turns them back on)."""
    AdapterSlot.activate(model, None)


def remove_adapters(model: nn.Module, name: str = DEFAULT_SET) -> None:
    """Delete adapter set ``name``; blocks left with no set lose their slot and hook."""
    AdapterSlot.detach(model, name)


def list_adapter_sets(model: nn.Module) -> list[str]:
    """Names of the adapter sets attached to ``model``."""
    return AdapterSlot.set_names(model)


def adapted_blocks(model: nn.Module, name: str | None = None) -> list[int]:
    """Indices of blocks holding adapter set ``name`` (default: the active set)."""
    return AdapterSlot.blocks_of(model, name or AdapterSlot.active_set(model))


# ---------------------------------------------------------------- count (pure) and state dicts
def adapter_param_count(n_blocks: int, width: int, rank: int) -> int:
    """Adapter parameters: ``n_blocks * (2*d*r + r + d)`` (down weight+bias, up weight+bias)."""
    return n_blocks * (2 * width * rank + rank + width)


def adapter_state_dict(
    model: nn.Module, name: str | None = None, include_head: bool = True
) -> dict[str, torch.Tensor]:
    """Tensors of one adapter set (``adapters.{block}.{down,up}.{weight,bias}``) plus the head.

    Keys do not depend on the set's name, so a file saved from set ``a`` loads into set ``b``.
    """
    name = name or AdapterSlot.active_set(model)
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
    name = name or AdapterSlot.active_set(model)

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
