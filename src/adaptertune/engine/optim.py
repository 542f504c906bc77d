"""AdamW parameter groups and the warm-up + cosine learning-rate schedule (pure)."""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["build_optimizer", "param_groups", "warmup_cosine"]


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


def build_optimizer(model: nn.Module, lr: float, weight_decay: float, decay_all: bool = False) -> torch.optim.AdamW:
    groups = [g for g in param_groups(model, weight_decay, decay_all) if g["params"]]
    if not groups:
        raise ValueError("The model has no trainable parameters.")
    return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.999))


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
