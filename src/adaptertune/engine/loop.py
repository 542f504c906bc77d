"""The training loop: AdamW + warm-up/cosine, clipping, AMP, best-val selection, test of the best model.

Knows nothing of registries: it takes a model, loaders and a resolved TrainConfig (lr and weight decay set).
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import math
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import nn

from ..config import TrainConfig
from ..errors import CheckpointError, ConfigError, NonFiniteLossError
from .checkpoint import load_checkpoint, restore_training_state, save_checkpoint
from .distributed import all_true, current, reduce_sums, wrap_ddp
from .metrics import topk_correct
from .optim import build_optimizer, warmup_cosine

_logger = logging.getLogger(__name__)

__all__ = ["Callback", "FitResult", "autocast_context", "evaluate", "fit", "resolve_device", "resolve_precision"]


class Callback(Protocol):
    """Progress hooks (the CLI draws bars with them; runs.py writes metrics.jsonl)."""

    def on_train_start(self, total_steps: int, steps_per_epoch: int, start_step: int) -> None:
        """``start_step``: optimizer steps already done (non-zero when resuming)."""

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
    """Top-1 / top-5 accuracy (%), mean cross-entropy and the count of skipped (corrupt) images over ``loader``."""
    model.eval()
    n = loss_sum = top1 = top5 = skipped = 0.0
    for batch in loader:  # this rank's shard under torchrun; the sums are reduced below
        skipped += batch[2] if len(batch) > 2 else 0
        x, y = batch[0].to(device, non_blocking=True), batch[1].to(device, non_blocking=True)
        if y.numel() == 0:
            continue
        with autocast_context(precision, device):
            logits = model(x)
        logits = logits.float()
        loss_sum += float(F.cross_entropy(logits, y, reduction="sum"))
        c1, c5 = topk_correct(logits, y, (1, 5))
        top1, top5, n = top1 + c1, top5 + c5, n + y.numel()
    loss_sum, top1, top5, n, skipped = reduce_sums([loss_sum, top1, top5, n, skipped])
    if n == 0:
        return {"acc": float("nan"), "top5": float("nan"), "loss": float("nan"), "n": 0, "skipped": int(skipped)}
    return {
        "acc": 100.0 * top1 / n,
        "top5": 100.0 * top5 / n,
        "loss": loss_sum / n,
        "n": int(n),
        "skipped": int(skipped),
    }


def _trainable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def _start_epoch(loader: Iterable, epoch: int, skip: int) -> Iterable:
    """Set the sampler's epoch (seeded order) and start it at batch ``skip`` when resuming mid-epoch."""
    sampler = getattr(loader, "sampler", None)
    if hasattr(sampler, "set_epoch"):
        sampler.set_epoch(epoch)
    if skip == 0:
        return loader
    if hasattr(sampler, "skip_batches"):
        sampler.skip_batches(skip)
        return loader
    return itertools.islice(loader, skip, None)  # any deterministic loader: replay and drop


def fit(
    model: nn.Module,
    train_loader: Iterable,
    val_loader: Iterable | None,
    test_loader: Iterable,
    cfg: TrainConfig,
    device: torch.device,
    callbacks: list[Callback] = (),
    checkpoint_path: str | Path | None = None,
    resume: bool = False,
) -> FitResult:
    """Train ``model`` and return the test metrics of its best-validation-accuracy epoch.

    Args:
        checkpoint_path: where to keep the resume checkpoint (written at the end of every epoch and every
            ``cfg.checkpoint_every_steps`` steps; rank 0 only). None: no checkpoints.
        resume: continue from ``checkpoint_path`` if it exists. With the seeded
            :class:`~adaptertune.engine.sampling.ResumableSampler` the result is bitwise the same as an
            uninterrupted run's (same device and thread count).

    Raises:
        NonFiniteLossError: the loss became NaN/inf (names the step); the last checkpoint is kept.
        CheckpointError: the checkpoint to resume from is corrupt or belongs to another model.
    """
    assert cfg.lr is not None and cfg.weight_decay is not None, "resolve lr/weight_decay before fit()"
    precision = resolve_precision(cfg.precision, device)
    model.to(device)
    net = wrap_ddp(model, device)  # forward/backward through DDP; parameters and checkpoints via `model`
    is_main = current().is_main
    optimizer = build_optimizer(model, cfg.lr, cfg.weight_decay, cfg.decay_all)
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
    sampler = getattr(train_loader, "sampler", None)
    steps_per_epoch = (
        len(train_loader) if not hasattr(sampler, "per_rank") else -(-sampler.per_rank() // sampler.batch_size)
    )
    total_steps = cfg.epochs * steps_per_epoch
    warmup_epochs = cfg.warmup_epochs if cfg.warmup_epochs is not None else min(5.0, 0.1 * cfg.epochs)
    warmup_steps = min(int(round(warmup_epochs * steps_per_epoch)), max(total_steps - 1, 0))
    trainable = [p for p in model.parameters() if p.requires_grad]

    best_state = _trainable_state(model)
    st: dict[str, Any] = {
        "epochs_done": 0,  # completed epochs
        "batch_in_epoch": 0,  # batches done of epoch epochs_done + 1
        "step": 0,
        "sums": [0.0, 0.0, 0.0],  # loss_sum, correct, count of the epoch in progress (all ranks)
        "skipped": 0,
        "seen": 0,
        "train_seconds": 0.0,
        "epoch_seconds": 0.0,
        "best_val": -math.inf,
        "best_epoch": 0,
        "history": [],
        "lr": cfg.lr,
    }
    if resume and checkpoint_path is not None and Path(checkpoint_path).is_file():
        tensors, meta = load_checkpoint(checkpoint_path)
        best_state, saved = restore_training_state(tensors, meta, model, optimizer, scaler, str(checkpoint_path))
        if saved.get("steps_per_epoch") != steps_per_epoch:
            raise CheckpointError(
                f"{checkpoint_path} was written with {saved.get('steps_per_epoch')} steps per epoch, this run has "
                f"{steps_per_epoch}; resume with the same data, batch size and number of processes."
            )
        st.update(saved)
        _logger.info(
            "resuming at epoch %d, batch %d (step %d)", st["epochs_done"] + 1, st["batch_in_epoch"], st["step"]
        )

    def save(batch_in_epoch: int, sums: list[float], epoch_seconds: float) -> None:
        g_sums = reduce_sums(sums)  # every rank joins the reduction; rank 0 stores the global sums
        if checkpoint_path is None or not is_main:
            return
        state = dict(
            st,
            batch_in_epoch=batch_in_epoch,
            sums=g_sums,
            epoch_seconds=epoch_seconds,
            steps_per_epoch=steps_per_epoch,
        )
        save_checkpoint(checkpoint_path, model, optimizer, scaler, best_state, state)

    forward = torch.compile(net) if cfg.compile else net  # optional compiled training forward
    for cb in callbacks:
        cb.on_train_start(total_steps, steps_per_epoch, st["step"])
    history: list[dict[str, Any]] = st["history"]
    step, lr = st["step"], st["lr"]
    for epoch in range(st["epochs_done"] + 1, cfg.epochs + 1):
        skip = st["batch_in_epoch"]
        # a resumed epoch starts from the saved sums on rank 0 only, so the epoch-end reduction adds up
        sums = list(st["sums"]) if skip and is_main else [0.0, 0.0, 0.0]
        prior_seconds = st["epoch_seconds"] if skip else 0.0
        st["batch_in_epoch"], st["sums"], st["epoch_seconds"] = 0, [0.0, 0.0, 0.0], 0.0
        net.train()
        t0 = time.perf_counter()
        for b, batch in enumerate(_start_epoch(train_loader, epoch, skip), start=skip):
            x, y = batch[0].to(device, non_blocking=True), batch[1].to(device, non_blocking=True)
            st["skipped"] += batch[2] if len(batch) > 2 else 0
            lr = warmup_cosine(step, total_steps, warmup_steps, cfg.lr, cfg.min_lr)
            for g in optimizer.param_groups:
                g["lr"] = lr
            if y.numel() == 0:  # every image of the batch was corrupt and skipped
                step += 1
                continue
            with autocast_context(precision, device):
                logits = forward(x)
                loss = F.cross_entropy(logits.float(), y, label_smoothing=cfg.label_smoothing)
            if not all_true(bool(torch.isfinite(loss))):
                raise NonFiniteLossError(
                    f"Loss became {float(loss.detach())} at step {step} (epoch {epoch}); lower the learning rate "
                    f"(now {lr:.3g}) or use fp32. The last good checkpoint is kept."
                )
            scaler.scale(loss).backward()
            if cfg.grad_clip is not None:
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(trainable, cfg.grad_clip)
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
            loss_value = float(loss.detach())
            sums[0] += loss_value * y.numel()
            sums[1] += int((logits.argmax(1) == y).sum())
            sums[2] += y.numel()
            for cb in callbacks:
                cb.on_step(step, loss_value, lr)
            step += 1
            every = cfg.checkpoint_every_steps
            if every and step % every == 0 and b + 1 < steps_per_epoch:
                st["step"], st["lr"] = step, lr
                save(b + 1, sums, prior_seconds + time.perf_counter() - t0)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        epoch_seconds = prior_seconds + time.perf_counter() - t0
        loss_sum, correct, count = reduce_sums(sums)
        st["train_seconds"] += epoch_seconds
        st["seen"] += int(count)
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
            if val["acc"] > st["best_val"]:
                st["best_val"], st["best_epoch"], best_state = val["acc"], epoch, _trainable_state(model)
        else:  # no validation split: the last epoch is selected
            st["best_epoch"], best_state = epoch, _trainable_state(model)
        history.append(metrics)
        for cb in callbacks:
            cb.on_epoch_end(metrics)
        st.update(epochs_done=epoch, step=step, lr=lr)
        save(0, [0.0, 0.0, 0.0], 0.0)

    test_last = evaluate(model, test_loader, device, precision)
    with torch.no_grad():
        params = dict(model.named_parameters())
        for n, v in best_state.items():
            params[n].copy_(v)
    test = test_last if st["best_epoch"] == cfg.epochs else evaluate(model, test_loader, device, precision)
    (skipped,) = reduce_sums([st["skipped"]])
    return FitResult(
        best_epoch=st["best_epoch"],
        best_val_acc=st["best_val"] if val_loader is not None else None,
        test=test,
        test_last=test_last,
        history=history,
        train_seconds=st["train_seconds"],
        images_per_second=st["seen"] / max(st["train_seconds"], 1e-9),
        skipped_images=int(skipped),
        best_state=best_state,
        selection="best_val_top1" if val_loader is not None else "last_epoch",
    )
