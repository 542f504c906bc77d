"""The forward and backward of one training batch: the loss, timm Mixup / CutMix, gradient accumulation and
gradient checkpointing.

Each is off by default, and off it leaves the loop's numbers bitwise as they were: one micro-batch is the plain
forward/backward. timm's own functions do the work (``Mixup``, ``SoftTargetCrossEntropy``,
``set_grad_checkpointing``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..config import TrainConfig
from ..errors import ConfigError
from .device import autocast_context

__all__ = ["StepRunner", "make_mixup", "prepare_model"]


def prepare_model(model: nn.Module, cfg: TrainConfig) -> None:
    """Switch on timm's gradient checkpointing of the blocks (activations recomputed in backward)."""
    if not cfg.grad_checkpointing:
        return
    if not hasattr(model, "set_grad_checkpointing"):
        raise ConfigError(
            f"`train.grad_checkpointing` needs a timm model; {type(model).__name__} has no blocks to checkpoint."
        )
    model.set_grad_checkpointing(True)


def make_mixup(mixup: float, cutmix: float, label_smoothing: float, num_classes: int) -> Callable | None:
    """timm ``Mixup`` (batch mode; label smoothing folded into its soft targets), or None when both are off."""
    if not mixup and not cutmix:
        return None
    from timm.data import Mixup

    return Mixup(mixup_alpha=mixup, cutmix_alpha=cutmix, label_smoothing=label_smoothing, num_classes=num_classes)


class StepRunner:
    """Forward and backward of one training batch: the loss (cross-entropy, or soft-target cross-entropy on
    mixed images), in ``accum_steps`` micro-batches whose gradients add up to the whole batch's.

    Each micro-batch's mean loss is weighted by its share of the batch, so the summed gradient is the
    gradient of the batch mean; under DDP only the last micro-batch all-reduces (``no_sync``). timm's
    ``Mixup`` draws from numpy's global RNG: each step draws from a stream seeded by (``seed``, step), and the
    global state is put back, so a resumed run mixes its batches as the uninterrupted one did.
    """

    def __init__(
        self, cfg: TrainConfig, precision: str, device: torch.device, mix: Callable | None, seed: int = 0
    ) -> None:
        self.cfg, self.precision, self.device, self.mix, self.seed = cfg, precision, device, mix, seed
        if mix is not None:
            from timm.loss import SoftTargetCrossEntropy

            self.soft_loss = SoftTargetCrossEntropy()

    def _loss(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if target.ndim == 2:  # soft targets from Mixup
            return self.soft_loss(logits, target)
        return F.cross_entropy(logits, target, label_smoothing=self.cfg.label_smoothing)

    def _mixed(self, x: torch.Tensor, y: torch.Tensor, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        if self.mix is None:
            return x, y
        import numpy as np

        saved = np.random.get_state()
        np.random.seed((self.seed, step))
        try:
            if len(x) % 2:  # timm pairs image i with image B-1-i: an odd batch lends its first image as a partner
                xm, ym = self.mix(torch.cat((x, x[:1])), torch.cat((y, y[:1])))
                return xm[:-1], ym[:-1]
            return self.mix(x.clone(), y)  # timm mixes in place; the loader's tensor stays as it was
        finally:
            np.random.set_state(saved)

    def run(
        self, forward: Callable, net: nn.Module, x: torch.Tensor, y: torch.Tensor, scaler: Any, step: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Backward of batch (x, y) at optimizer step ``step``; returns (its loss, detached, and its logits
        (B, C)) for the step log."""
        x, target = self._mixed(x, y, step)
        if self.cfg.accum_steps == 1:
            with autocast_context(self.precision, self.device):
                logits = forward(x)
                loss = self._loss(logits.float(), target)
            scaler.scale(loss).backward()
            return loss, logits
        chunks = list(zip(x.tensor_split(self.cfg.accum_steps), target.tensor_split(self.cfg.accum_steps)))
        chunks = [(a, b) for a, b in chunks if len(a)]
        total, outs = torch.zeros((), device=x.device), []
        for i, (xc, tc) in enumerate(chunks):
            sync = i == len(chunks) - 1 or not hasattr(net, "no_sync")
            with contextlib.nullcontext() if sync else net.no_sync():
                with autocast_context(self.precision, self.device):
                    logits = forward(xc)
                    loss = self._loss(logits.float(), tc) * (len(xc) / len(x))
                scaler.scale(loss).backward()
            total, outs = total + loss.detach(), [*outs, logits.detach()]
        return total, torch.cat(outs)
