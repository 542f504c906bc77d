"""The training loop: AdamW + warm-up/cosine, clipping, AMP, best-val selection, test of the best model.

Knows nothing of registries: it takes a model, loaders and a resolved TrainConfig (lr and weight decay set).
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import nn

from ..config import TrainConfig
from ..errors import ConfigError, NonFiniteLossError
from .metrics import topk_correct
from .optim import build_optimizer, warmup_cosine

__all__ = ["Callback", "FitResult", "autocast_context", "evaluate", "fit", "resolve_device", "resolve_precision"]


class Callback(Protocol):
    """Progress hooks (the CLI draws bars with them; runs.py writes metrics.jsonl)."""

    def on_train_start(self, total_steps: int, steps_per_epoch: int) -> None: ...

    def on_step(self, step: int, loss: float, lr: float) -> None: ...

    def on_epoch_end(self, metrics: dict[str, Any]) -> None: ...


@dataclass
class FitResult:
    best_epoch: int
    best_val_acc: float | None
    test: dict[str, float]  # metrics of the best-val model
    test_last: dict[str, float]  # metrics of the last-epoch model
    history: list[dict[str, Any]]
    train_seconds: float
    images_per_second: float
    skipped_images: int
    best_state: dict[str, torch.Tensor] = field(repr=False)  # trainable tensors of the selected model
    selection: str = "best_val_top1"


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"Device '{device}' asked for, but CUDA is not available here; use --device cpu.")
    return torch.device(device)


def resolve_precision(precision: str, device: torch.device) -> str:
    """``auto`` -> bf16 on CUDA, fp32 on CPU (these CPUs have no native bf16: ~170x slower matmuls)."""
    if precision == "auto":
        return "bf16" if device.type == "cuda" else "fp32"
    return precision


def autocast_context(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


@torch.no_grad()
def evaluate(model: nn.Module, loader: Iterable, device: torch.device, precision: str = "fp32") -> dict[str, float]:
    """Top-1 / top-5 accuracy (%) and mean cross-entropy over ``loader``."""
    model.eval()
    n = loss_sum = top1 = top5 = 0.0
    for batch in loader:
        x, y = batch[0].to(device, non_blocking=True), batch[1].to(device, non_blocking=True)
        if y.numel() == 0:
            continue
        with autocast_context(precision, device):
            logits = model(x)
        logits = logits.float()
        loss_sum += float(F.cross_entropy(logits, y, reduction="sum"))
        c1, c5 = topk_correct(logits, y, (1, 5))
        top1, top5, n = top1 + c1, top5 + c5, n + y.numel()
    if n == 0:
        return {"acc": float("nan"), "top5": float("nan"), "loss": float("nan"), "n": 0}
    return {"acc": 100.0 * top1 / n, "top5": 100.0 * top5 / n, "loss": loss_sum / n, "n": int(n)}


def _trainable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def fit(
    model: nn.Module,
    train_loader: Iterable,
    val_loader: Iterable | None,
    test_loader: Iterable,
    cfg: TrainConfig,
    device: torch.device,
    callbacks: list[Callback] = (),
) -> FitResult:
    """Train ``model`` and return the test metrics of its best-validation-accuracy epoch.

    Raises:
        NonFiniteLossError: the loss became NaN/inf (names the step).
    """
    assert cfg.lr is not None and cfg.weight_decay is not None, "resolve lr/weight_decay before fit()"
    precision = resolve_precision(cfg.precision, device)
    model.to(device)
    optimizer = build_optimizer(model, cfg.lr, cfg.weight_decay, cfg.decay_all)
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
    steps_per_epoch = len(train_loader)
    total_steps = cfg.epochs * steps_per_epoch
    warmup_epochs = cfg.warmup_epochs if cfg.warmup_epochs is not None else min(5.0, 0.1 * cfg.epochs)
    warmup_steps = min(int(round(warmup_epochs * steps_per_epoch)), max(total_steps - 1, 0))
    trainable = [p for p in model.parameters() if p.requires_grad]
    forward = torch.compile(model) if cfg.compile else model  # perf: optional compiled training forward
    for cb in callbacks:
        cb.on_train_start(total_steps, steps_per_epoch)

    history: list[dict[str, Any]] = []
    best_val, best_epoch, best_state = -math.inf, 0, _trainable_state(model)
    step, skipped, seen, train_seconds = 0, 0, 0, 0.0
    for epoch in range(1, cfg.epochs + 1):
        model.train()
        t0 = time.perf_counter()
        loss_sum = correct = count = 0.0
        for batch in train_loader:
            x, y = batch[0].to(device, non_blocking=True), batch[1].to(device, non_blocking=True)
            skipped += batch[2] if len(batch) > 2 else 0
            lr = warmup_cosine(step, total_steps, warmup_steps, cfg.lr, cfg.min_lr)
            for g in optimizer.param_groups:
                g["lr"] = lr
            if y.numel() == 0:  # every image of the batch was corrupt and skipped
                step += 1
                continue
            with autocast_context(precision, device):
                logits = forward(x)
                loss = F.cross_entropy(logits.float(), y, label_smoothing=cfg.label_smoothing)
            if not torch.isfinite(loss):
                raise NonFiniteLossError(
                    f"Loss became {float(loss)} at step {step} (epoch {epoch}); lower the learning rate "
                    f"(now {lr:.3g}) or use fp32."
                )
            scaler.scale(loss).backward()
            if cfg.grad_clip is not None:
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(trainable, cfg.grad_clip)
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
            loss_value = float(loss.detach())
            loss_sum += loss_value * y.numel()
            correct += int((logits.argmax(1) == y).sum())
            count += y.numel()
            for cb in callbacks:
                cb.on_step(step, loss_value, lr)
            step += 1
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        epoch_seconds = time.perf_counter() - t0
        train_seconds += epoch_seconds
        seen += int(count)
        metrics: dict[str, Any] = {
            "epoch": epoch,
            "step": step,
            "lr": lr,
            "train_loss": loss_sum / max(count, 1),
            "train_acc": 100.0 * correct / max(count, 1),
            "epoch_seconds": epoch_seconds,
            "train_images_per_second": count / max(epoch_seconds, 1e-9),
        }
        if val_loader is not None:
            val = evaluate(model, val_loader, device, precision)
            metrics.update(val_acc=val["acc"], val_top5=val["top5"], val_loss=val["loss"])
            if val["acc"] > best_val:
                best_val, best_epoch, best_state = val["acc"], epoch, _trainable_state(model)
        else:  # no validation split: the last epoch is selected
            best_epoch, best_state = epoch, _trainable_state(model)
        history.append(metrics)
        for cb in callbacks:
            cb.on_epoch_end(metrics)

    test_last = evaluate(model, test_loader, device, precision)
    with torch.no_grad():
        params = dict(model.named_parameters())
        for n, v in best_state.items():
            params[n].copy_(v)
    test = test_last if best_epoch == cfg.epochs else evaluate(model, test_loader, device, precision)
    return FitResult(
        best_epoch=best_epoch,
        best_val_acc=best_val if val_loader is not None else None,
        test=test,
        test_last=test_last,
        history=history,
        train_seconds=train_seconds,
        images_per_second=seen / max(train_seconds, 1e-9),
        skipped_images=skipped,
        best_state=best_state,
        selection="best_val_top1" if val_loader is not None else "last_epoch",
    )
