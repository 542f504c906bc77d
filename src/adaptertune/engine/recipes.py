"""timm training recipes as options of the loop: optimizer choice and layer-wise lr decay, EMA of the trained
tensors, mixup / cutmix, gradient accumulation and gradient checkpointing.

Each is off by default, and off it leaves the loop's numbers bitwise as they were: ``adamw`` without layer
decay is :func:`~adaptertune.engine.optim.build_optimizer`; one micro-batch is the plain forward/backward.
timm's own functions do the work where they exist (``create_optimizer_v2``, ``param_groups_layer_decay``,
``Mixup``, ``SoftTargetCrossEntropy``, ``set_grad_checkpointing``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..config import TrainConfig
from ..errors import CheckpointError, ConfigError
from .device import autocast_context
from .optim import build_optimizer

__all__ = [
    "StepRunner",
    "TrainableEma",
    "check_optimizer",
    "ema_metrics",
    "make_mixup",
    "make_optimizer",
    "prepare_model",
    "use_weights",
]


def check_optimizer(name: str) -> None:
    """Raise ConfigError unless ``name`` is an optimizer timm's ``create_optimizer_v2`` knows."""
    from timm.optim import list_optimizers

    known = list_optimizers()
    if name not in known:
        raise ConfigError(f"`train.optimizer` {name!r} is not a timm optimizer; use one of: {', '.join(known)}.")


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """The run's optimizer: ``adamw`` without layer decay is today's two-group AdamW (bitwise); anything else
    goes through ``timm.optim.create_optimizer_v2`` (layer decay: ``param_groups_layer_decay``, whose groups
    carry an ``lr_scale`` the loop multiplies the scheduled lr by)."""
    if cfg.optimizer == "adamw" and cfg.layer_decay is None:
        return build_optimizer(model, cfg.lr, cfg.weight_decay, cfg.decay_all)
    from timm.optim import create_optimizer_v2

    check_optimizer(cfg.optimizer)
    if cfg.layer_decay is not None and not hasattr(model, "group_matcher"):
        raise ConfigError(
            f"`train.layer_decay` needs a timm model with layer groups; {type(model).__name__} has none."
        )
    return create_optimizer_v2(
        model,
        opt=cfg.optimizer,
        lr=cfg.lr,
        weight_decay=cfg.weight_decay,
        filter_bias_and_bn=not cfg.decay_all,
        layer_decay=cfg.layer_decay,
    )


def prepare_model(model: nn.Module, cfg: TrainConfig) -> None:
    """Switch on timm's gradient checkpointing of the blocks (activations recomputed in backward)."""
    if not cfg.grad_checkpointing:
        return
    if not hasattr(model, "set_grad_checkpointing"):
        raise ConfigError(
            f"`train.grad_checkpointing` needs a timm model; {type(model).__name__} has no blocks to checkpoint."
        )
    model.set_grad_checkpointing(True)


class TrainableEma:
    """Exponential moving average of the trainable tensors: after every optimizer step
    ``ema <- decay * ema + (1 - decay) * live`` (timm ``ModelEmaV3``'s update, without its warm-up, kept for
    the tensors that train only: the frozen backbone is its own average)."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.decay = decay
        self.live = {n: p for n, p in model.named_parameters() if p.requires_grad}
        self.shadow = {n: p.detach().clone() for n, p in self.live.items()}

    @torch.no_grad()
    def update(self) -> None:
        torch._foreach_lerp_(list(self.shadow.values()), [p.detach() for p in self.live.values()], 1.0 - self.decay)

    def state(self) -> dict[str, torch.Tensor]:
        """Checkpoint tensors ``ema.<name>``."""
        return {f"ema.{n}": v for n, v in self.shadow.items()}

    def load(self, tensors: dict[str, torch.Tensor], source: str) -> None:
        saved = {k[len("ema.") :]: v for k, v in tensors.items() if k.startswith("ema.")}
        if set(saved) != set(self.shadow):
            raise CheckpointError(f"{source} holds no EMA of this model's trainable tensors (train.ema changed?).")
        with torch.no_grad():
            for n, v in saved.items():
                self.shadow[n].copy_(v)

    @contextlib.contextmanager
    def applied(self) -> Iterator[None]:
        """Run the model with the EMA tensors in place of the live ones (swapped back afterwards, exactly)."""
        with torch.no_grad():
            for n, p in self.live.items():
                p.data, self.shadow[n] = self.shadow[n], p.data
        try:
            yield
        finally:
            with torch.no_grad():
                for n, p in self.live.items():
                    p.data, self.shadow[n] = self.shadow[n], p.data


def use_weights(ema: TrainableEma | None, cfg: TrainConfig) -> contextlib.AbstractContextManager:
    """The weights that are validated, selected and tested: the EMA's with ``train.ema_eval``, else the live."""
    return ema.applied() if ema is not None and cfg.ema_eval else contextlib.nullcontext()


def ema_metrics(ema: TrainableEma | None, cfg: TrainConfig, evaluate_val: Callable[[], dict]) -> dict[str, float]:
    """``val_acc_ema`` when the EMA is tracked but the live weights are selected (so the two can be compared)."""
    if ema is None or cfg.ema_eval:
        return {}
    with ema.applied():
        return {"val_acc_ema": evaluate_val()["acc"]}


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
