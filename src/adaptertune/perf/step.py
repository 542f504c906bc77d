"""The building blocks the speed and memory tools share: a model per method, a fixed batch, one engine-style step."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..engine.device import autocast_context
from ..engine.optim import build_optimizer
from ..methods import METHODS, build_method
from ..methods.registry import resolve_options

__all__ = ["REFERENCE", "build_for_speed", "make_batch", "make_train_step", "speed_options"]

# Ratios to this method are reported next to the ratios to ``full``: the registered ``lora`` (PEFT's LoRA
# injected exactly as ``train --method lora`` does), the usual external reference for adapter methods.
REFERENCE = "lora"


def speed_options(
    method: str,
    sections: Mapping[str, Any] | None = None,
    rank: int | None = None,
    placement: str | list[int] | None = None,
) -> Any:
    """The options ``method`` is timed with: its section of ``sections`` (``{"lora": {"targets": "qkv+mlp"}}``,
    as ``train`` reads them; other methods' sections are checked against their own class), over the shorthands
    ``rank`` and ``placement`` where the method takes them (None: not given); the method's defaults for the rest.

    Raises:
        UnknownNameError: no such method (or section).
        ConfigError: a bad option.
    """
    info = METHODS.get(method)
    short = {k: v for k, v in (("rank", rank), ("placement", placement)) if v is not None and k in info.option_names()}
    own = sections.get(method) if sections else None
    if dataclasses.is_dataclass(own) and not isinstance(own, type):
        own = dataclasses.asdict(own)
    merged = {**(sections or {}), method: {**short, **(own or {})} if short or own else None}
    return resolve_options(method, merged)


def build_for_speed(method: str, model: nn.Module, options: Any) -> nn.Module:
    """Apply registered ``method`` to ``model`` in place with ``options`` (:func:`speed_options`, or a mapping
    of its options as a memory probe's spec carries them)."""
    return build_method(method, model, options)


def make_batch(
    model: nn.Module, batch_size: int, num_classes: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    h, w = model.patch_embed.img_size
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch_size, 3, h, w, generator=g)
    y = torch.randint(0, num_classes, (batch_size,), generator=g)
    return x.to(device), y.to(device)


def make_train_step(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, precision: str, device: torch.device, grad_clip: float = 1.0
) -> Callable[[], None]:
    """One optimizer step as the engine does it (AdamW param groups, clipping, ``zero_grad(set_to_none)``)."""
    optimizer = build_optimizer(model, lr=1e-4, weight_decay=0.05)
    trainable = [p for p in model.parameters() if p.requires_grad]

    def step() -> None:
        with autocast_context(precision, device):
            loss = F.cross_entropy(model(x).float(), y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step
