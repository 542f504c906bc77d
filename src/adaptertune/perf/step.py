"""The building blocks the speed and memory tools share: a model per method, a fixed batch, one engine-style step."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..config import AdapterConfig
from ..engine.loop import autocast_context
from ..engine.optim import build_optimizer
from ..errors import ConfigError
from ..methods import METHODS, build_method

__all__ = ["REFERENCE", "build_for_speed", "make_batch", "make_train_step"]

REFERENCE = "lora"  # PEFT's LoRA, timed as the external reference

def build_for_speed(
    method: str, model: nn.Module, rank: int, placement: str | list[int], lora_targets: tuple[str, ...] | list[str]
) -> nn.Module:
    """Apply ``method`` to ``model`` in place (``lora``: PEFT LoRA with a trainable head)."""
    if method != REFERENCE:
        adapter = AdapterConfig(rank=rank, placement=placement) if METHODS.get(method).uses_adapter else None
        return build_method(method, model, adapter)
    try:
        from peft import LoraConfig, get_peft_model
    except ImportError:
        raise ConfigError("The `lora` reference needs PEFT: pip install 'adaptertune[peft]'.") from None
    for p in model.parameters():
        p.requires_grad_(False)
    peft_model = get_peft_model(model, LoraConfig(r=rank, lora_alpha=rank, target_modules=list(lora_targets)))
    for p in model.get_classifier().parameters():
        p.requires_grad_(True)
    return peft_model


def make_batch(
    model: nn.Module, batch_size: int, num_classes: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    base = getattr(model, "base_model", model)
    base = getattr(base, "model", base)  # PEFT wraps twice
    h, w = base.patch_embed.img_size
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


