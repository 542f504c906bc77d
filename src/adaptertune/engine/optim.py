"""The optimizer and its learning-rate schedule: parameter groups, AdamW or any timm optimizer, layer-wise lr
decay, and the warm-up + cosine schedule (pure).

The default (``adamw`` without layer decay) is the protocol's two-group AdamW (:func:`param_groups`); any other
choice goes through timm's ``create_optimizer_v2`` (layer decay: ``param_groups_layer_decay``).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..errors import ConfigError

__all__ = ["build_optimizer", "check_optimizer", "param_groups", "warmup_cosine"]


_NO_DECAY_TOKENS = ("cls_token", "pos_embed", "dist_token", "reg_token", "mask_token")


def param_groups(model: nn.Module, weight_decay: float, decay_all: bool = False) -> list[dict]:
    """Two AdamW groups over the trainable parameters: decayed weights, and undecayed biases, norms,
    tokens and position embeddings (timm's ``no_weight_decay()`` names included). ``decay_all`` puts
    everything in the decayed group, as the paper's code does."""
    skip = set(model.no_weight_decay()) if hasattr(model, "no_weight_decay") else set()
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        plain = p.ndim <= 1 or name.endswith(".bias") or name in skip or name.split(".")[-1] in _NO_DECAY_TOKENS
        (decay if decay_all or not plain else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def check_optimizer(name: str) -> None:
    """Raise ConfigError unless ``name`` is an optimizer timm's ``create_optimizer_v2`` knows."""
    from timm.optim import list_optimizers

    known = list_optimizers()
    if name not in known:
        raise ConfigError(f"`train.optimizer` {name!r} is not a timm optimizer; use one of: {', '.join(known)}.")


def build_optimizer(
    model: nn.Module,
    lr: float,
    weight_decay: float,
    decay_all: bool = False,
    *,
    optimizer: str = "adamw",
    layer_decay: float | None = None,
) -> torch.optim.Optimizer:
    """The optimizer over ``model``'s trainable parameters (``train.optimizer``, ``train.layer_decay``).

    ``adamw`` without layer decay is the two-group AdamW of :func:`param_groups`; anything else is
    ``timm.optim.create_optimizer_v2`` (layer decay: ``param_groups_layer_decay``, whose groups carry an
    ``lr_scale`` the loop multiplies the scheduled lr by).

    Raises:
        ConfigError: an unknown optimizer name, or layer decay on a model without timm's layer groups.
        ValueError: the model has no trainable parameters.
    """
    if optimizer == "adamw" and layer_decay is None:
        groups = [g for g in param_groups(model, weight_decay, decay_all) if g["params"]]
        if not groups:
            raise ValueError("The model has no trainable parameters.")
        return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.999))
    from timm.optim import create_optimizer_v2

    check_optimizer(optimizer)
    if layer_decay is not None and not hasattr(model, "group_matcher"):
        raise ConfigError(
            f"`train.layer_decay` needs a timm model with layer groups; {type(model).__name__} has none."
        )
    return create_optimizer_v2(
        model,
        opt=optimizer,
        lr=lr,
        weight_decay=weight_decay,
        filter_bias_and_bn=not decay_all,
        layer_decay=layer_decay,
    )


def warmup_cosine(step: int, total_steps: int, warmup_steps: int, base_lr: float, min_lr: float = 0.0) -> float:
    """Learning rate at optimizer step ``step`` (0-based).

    1) linear warm-up from base_lr/(warmup_steps+1) to base_lr over ``warmup_steps`` steps;
    2) per-step cosine from base_lr down to min_lr at ``total_steps``.
    """
    if step < warmup_steps:
        return base_lr * (step + 1) / (warmup_steps + 1)
    decay_steps = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / decay_steps)
    coeff = 0.5 * (1.0 + math.cos(math.pi * progress))  # 1 -> 0
    return min_lr + coeff * (base_lr - min_lr)
