"""The training loop: AdamW + warm-up/cosine, clipping, AMP, best-val selection, test of the best model.

Knows nothing of registries: it takes a model, loaders and a resolved TrainConfig (lr and weight decay set).
"""

from __future__ import annotations

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
from ..errors import DataError
from .checkpoint import (
    check_checkpoint_fits,
    gather_rank_rng,
    load_checkpoint,
    restore_training_state,
    save_checkpoint,
)
from .device import autocast_context, cuda_backend_settings, resolve_device, resolve_precision
from .distributed import current, rank_seed, reduce_min, reduce_sums, wrap_ddp
from .metrics import topk_hits
from .optim import default_warmup_epochs, warmup_cosine
from .recipes import StepRunner, TrainableEma, ema_metrics, make_optimizer, prepare_model, use_weights
from .steplog import StepLog, first_non_finite
from .stopping import check_early_stop, non_finite_error, patience_step

_logger = logging.getLogger(__name__)

__all__ = [
    "Callback",
    "FitResult",
    "autocast_context",
    "cuda_backend_settings",
    "evaluate",
    "fit",
    "resolve_device",
    "resolve_precision",
]


class Callback(Protocol):
    """Progress hooks (the CLI draws bars with them; runs.py writes metrics.jsonl).

    ``on_step`` is called once per step, in order, but in bursts: at every ``train.log_every_steps``-th
    step, before each checkpoint and at the end of each epoch (the losses are read from the device there).
    """

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
    backend: dict[str, Any] = field(default_factory=dict)  # CUDA math settings the run trained with
    stopped_epoch: int | None = None  # the epoch early stopping ended training at (None: all epochs ran)


@torch.no_grad()
def evaluate(model: nn.Module, loader: Iterable, device: torch.device, precision: str = "fp32") -> dict[str, float]:
    """Top-1 / top-5 accuracy (%), mean cross-entropy and the count of skipped (corrupt) images over ``loader``.

    The sums stay on the device (float64, exact for counts) and are read once at the end.
    """
    model.eval()
    sums = torch.zeros(3, dtype=torch.float64, device=device)  # loss sum, top-1 hits, top-5 hits
    n = skipped = 0
    for batch in loader:  # this rank's shard under torchrun; the sums are reduced below
        skipped += batch[2] if len(batch) > 2 else 0
        x, y = batch[0].to(device, non_blocking=True), batch[1].to(device, non_blocking=True)
        if y.numel() == 0:
            continue
        with autocast_context(precision, device):
            logits = model(x)
        logits = logits.float()
        loss = F.cross_entropy(logits, y, reduction="sum")
        sums += torch.cat((loss.double()[None], topk_hits(logits, y, (1, 5)).double()))
        n += y.numel()
    loss_sum, top1, top5 = sums.tolist()
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


def _stand_in_batch(model: nn.Module, shape: torch.Size | None, device: torch.device) -> torch.Tensor:
    """One all-zero input (1, *shape) for a rank whose whole batch was corrupt: its forward and zero-weighted
    backward let the rank join DDP's gradient all-reduce with the others. ``shape``: a batch seen before on
    this rank; else the ViT's patch-embedding input.

    Raises:
        DataError: no batch seen yet and the model does not tell its input size.
    """
    if shape is None:
        pe = getattr(model, "patch_embed", None)
        size, chans = getattr(pe, "img_size", None), getattr(getattr(pe, "proj", None), "in_channels", None)
        if size is None or chans is None:
            raise DataError(
                "Every image of this process's first batch is corrupt and the model does not tell its input size; "
                "remove the corrupt images (adaptertune check-data) or train with one process."
            )
        shape = torch.Size((chans, *size))
    return torch.zeros((1, *shape), device=device)


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
    mix: Any = None,
) -> FitResult:
    """Train ``model`` and return the test metrics of its best-validation-accuracy epoch.

    With ``cfg.early_stop`` (patience P) training ends once validation accuracy has not improved for P
    epochs (:mod:`~adaptertune.engine.stopping`); the counter is part of the checkpoint, so resume stays exact.

    A step does not wait for the device: losses and hits are read every ``cfg.log_every_steps`` steps, at
    checkpoints and at epoch ends, and checked for NaN/inf there. Under torchrun every rank takes the same
    steps (one whose batch is all corrupt joins with zero gradients), draws its own dropout / drop-path
    masks (seed :func:`~adaptertune.engine.distributed.rank_seed`) and keeps its own RNG in checkpoints.

    Args:
        checkpoint_path: where to keep the resume checkpoint (written at the end of every epoch and every
            ``cfg.checkpoint_every_steps`` steps; rank 0 only). None: no checkpoints.
        resume: continue from ``checkpoint_path`` if it exists. With the seeded
            :class:`~adaptertune.engine.sampling.ResumableSampler` the result is bitwise the same as an
            uninterrupted run's (same device, precision and thread count).
        mix: timm ``Mixup`` for the training batches (:func:`~adaptertune.engine.recipes.make_mixup`), or None.

    Raises:
        NonFiniteLossError: the loss became NaN/inf (names the step); the last checkpoint is kept.
        ConfigError: ``cfg.early_stop`` without a validation loader.
        CheckpointError: the checkpoint to resume from is corrupt, belongs to another model or was trained
            in another precision.
    """
    with cuda_backend_settings(device) as backend:
        result = _fit(
            model, train_loader, val_loader, test_loader, cfg, device, callbacks, checkpoint_path, resume, mix
        )
    result.backend = backend
    return result


def _fit(
    model: nn.Module,
    train_loader: Iterable,
    val_loader: Iterable | None,
    test_loader: Iterable,
    cfg: TrainConfig,
    device: torch.device,
    callbacks: list[Callback],
    checkpoint_path: str | Path | None,
    resume: bool,
    mix: Any = None,
) -> FitResult:
    assert cfg.lr is not None and cfg.weight_decay is not None, "resolve lr/weight_decay before fit()"
    check_early_stop(cfg, val_loader is not None)
    precision = resolve_precision(cfg.precision, device)
    model.to(device)
    prepare_model(model, cfg)
    net = wrap_ddp(model, device)  # forward/backward through DDP; parameters and checkpoints via `model`
    dist = current()
    optimizer = make_optimizer(model, cfg)
    ema = TrainableEma(model, cfg.ema) if cfg.ema else None
    runner = StepRunner(cfg, precision, device, mix, seed=rank_seed(cfg.seed, dist.rank))
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
    sampler = getattr(train_loader, "sampler", None)
    steps_per_epoch = (
        len(train_loader) if not hasattr(sampler, "per_rank") else -(-sampler.per_rank() // sampler.batch_size)
    )
    total_steps = cfg.epochs * steps_per_epoch
    warmup_epochs = cfg.warmup_epochs if cfg.warmup_epochs is not None else default_warmup_epochs(cfg.epochs)
    warmup_steps = min(int(round(warmup_epochs * steps_per_epoch)), max(total_steps - 1, 0))
    trainable = [p for p in model.parameters() if p.requires_grad]

    best_state = _trainable_state(model)
    st: dict[str, Any] = {
        "epochs_done": 0,  # completed epochs
        "batch_in_epoch": 0,  # batches done of epoch epochs_done + 1
        "step": 0,
        "sums": [0.0, 0.0, 0.0],  # loss_sum, correct, count of the epoch in progress (all ranks)
        "skipped": 0,  # corrupt training images so far (all ranks in a checkpoint; this rank's while training)
        "seen": 0,
        "train_seconds": 0.0,
        "epoch_seconds": 0.0,
        "best_val": -math.inf,
        "best_epoch": 0,
        "stale_epochs": 0,  # early stopping: epochs since validation last improved by more than min_delta
        "stopped_epoch": None,  # the epoch early stopping ended training at
        "history": [],
        "lr": cfg.lr,
        "precision": precision,
    }
    if resume and checkpoint_path is not None and Path(checkpoint_path).is_file():
        tensors, meta = load_checkpoint(checkpoint_path)
        best_state, saved = restore_training_state(
            tensors, meta, model, optimizer, scaler, str(checkpoint_path), dist.rank
        )
        check_checkpoint_fits(saved, str(checkpoint_path), steps_per_epoch, precision)
        if ema is not None:
            ema.load(tensors, str(checkpoint_path))
        st.update(saved)
        if not dist.is_main:  # the checkpoint holds the sums of all ranks: rank 0 carries them on
            st["skipped"] = 0
        _logger.info(
            "resuming at epoch %d, batch %d (step %d)", st["epochs_done"] + 1, st["batch_in_epoch"], st["step"]
        )
    elif dist.rank > 0:  # own dropout / drop-path masks per rank; rank 0 keeps the single-process stream
        torch.manual_seed(rank_seed(cfg.seed, dist.rank))

    def save(batch_in_epoch: int, sums: list[float], epoch_seconds: float) -> None:
        # every rank joins the reduction and the RNG gather; rank 0 stores the global sums and all RNG states
        *g_sums, g_skipped = reduce_sums([*sums, st["skipped"]])
        rank_rng = gather_rank_rng(dist)
        if checkpoint_path is None or not dist.is_main:
            return
        state = dict(
            st,
            batch_in_epoch=batch_in_epoch,
            sums=g_sums,
            skipped=int(g_skipped),
            epoch_seconds=epoch_seconds,
            steps_per_epoch=steps_per_epoch,
        )
        extra = ema.state() if ema is not None else None
        save_checkpoint(checkpoint_path, model, optimizer, scaler, best_state, state, rank_rng, extra)

    log = StepLog()

    def flush(sums: list[float]) -> None:
        """Read the pending steps: NaN/inf check (agreed over ranks), epoch sums, ``on_step`` callbacks."""
        records = log.read()
        bad = first_non_finite(records)
        first_bad = reduce_min(bad.step if bad is not None else math.inf)
        for r in records:
            if r.step >= first_bad:
                break
            sums[0] += r.loss * r.n
            sums[1] += r.correct
            sums[2] += r.n
            for cb in callbacks:
                cb.on_step(r.step, r.loss, r.lr)
        if math.isfinite(first_bad):
            bad_step = int(first_bad)
            lr_bad = warmup_cosine(bad_step, total_steps, warmup_steps, cfg.lr, cfg.min_lr)
            raise non_finite_error(bad, bad_step, steps_per_epoch, lr_bad, step)

    forward = torch.compile(net) if cfg.compile else net  # optional compiled training forward
    for cb in callbacks:
        cb.on_train_start(total_steps, steps_per_epoch, st["step"])
    history: list[dict[str, Any]] = st["history"]
    step, lr = st["step"], st["lr"]
    in_shape: torch.Size | None = None  # of this rank's last non-empty batch
    last_epoch = st["stopped_epoch"] or cfg.epochs  # a checkpoint written as training stopped early: done
    for epoch in range(st["epochs_done"] + 1, last_epoch + 1):
        skip = st["batch_in_epoch"]
        # a resumed epoch starts from the saved sums on rank 0 only, so the epoch-end reduction adds up
        sums = list(st["sums"]) if skip and dist.is_main else [0.0, 0.0, 0.0]
        prior_seconds = st["epoch_seconds"] if skip else 0.0
        st["batch_in_epoch"], st["sums"], st["epoch_seconds"] = 0, [0.0, 0.0, 0.0], 0.0
        net.train()
        t0 = time.perf_counter()
        for b, batch in enumerate(_start_epoch(train_loader, epoch, skip), start=skip):
            x, y = batch[0].to(device, non_blocking=True), batch[1].to(device, non_blocking=True)
            st["skipped"] += batch[2] if len(batch) > 2 else 0
            lr = warmup_cosine(step, total_steps, warmup_steps, cfg.lr, cfg.min_lr)
            for g in optimizer.param_groups:
                g["lr"] = lr * g["lr_scale"] if "lr_scale" in g else lr  # lr_scale: timm's layer decay
            loss = None
            if y.numel() > 0:
                in_shape = x.shape[1:]
                loss, logits = runner.run(forward, net, x, y, scaler, step)  # forward + backward
                log.add(step, epoch, lr, loss, logits, y)
            elif dist.enabled:  # all corrupt here: join the others' gradient all-reduce with zero gradients
                with autocast_context(precision, device):
                    loss = forward(_stand_in_batch(model, in_shape, device)).float().sum() * 0.0
                scaler.scale(loss).backward()
            if loss is not None:  # a single process skips a batch with no images
                if cfg.grad_clip is not None:
                    scaler.unscale_(optimizer)
                    torch.nn.utils.clip_grad_norm_(trainable, cfg.grad_clip)
                scaler.step(optimizer)
                scaler.update()
                optimizer.zero_grad(set_to_none=True)
                if ema is not None:
                    ema.update()
            step += 1
            every = cfg.checkpoint_every_steps
            checkpoint_due = bool(every) and step % every == 0 and b + 1 < steps_per_epoch
            if checkpoint_due or step % cfg.log_every_steps == 0:
                flush(sums)
            if checkpoint_due:
                st["step"], st["lr"] = step, lr
                save(b + 1, sums, prior_seconds + time.perf_counter() - t0)
        flush(sums)
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
        with use_weights(ema, cfg):  # the EMA tensors with train.ema_eval
            if val_loader is not None:
                val = evaluate(model, val_loader, device, precision)
                metrics.update(val_acc=val["acc"], val_top5=val["top5"], val_loss=val["loss"])
                metrics.update(ema_metrics(ema, cfg, lambda: evaluate(model, val_loader, device, precision)))
                es = patience_step(
                    val["acc"], st["best_val"], st["stale_epochs"], cfg.early_stop, cfg.early_stop_min_delta
                )
                st["stale_epochs"] = es.stale
                if es.best:
                    st["best_val"], st["best_epoch"], best_state = val["acc"], epoch, _trainable_state(model)
                if es.stop:
                    st["stopped_epoch"] = epoch
            else:  # no validation split: the last epoch is selected
                st["best_epoch"], best_state = epoch, _trainable_state(model)
        history.append(metrics)
        for cb in callbacks:
            cb.on_epoch_end(metrics)
        st.update(epochs_done=epoch, step=step, lr=lr)
        save(0, [0.0, 0.0, 0.0], 0.0)
        if st["stopped_epoch"] is not None:
            _logger.info("early stop at epoch %d: no val improvement for %d epochs", epoch, cfg.early_stop)
            break

    with use_weights(ema, cfg):
        test_last = evaluate(model, test_loader, device, precision)
    with torch.no_grad():
        params = dict(model.named_parameters())
        for n, v in best_state.items():
            params[n].copy_(v)
    same = st["best_epoch"] == st["epochs_done"]  # the last model trained is the selected one
    test = test_last if same else evaluate(model, test_loader, device, precision)
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
        stopped_epoch=st["stopped_epoch"],
    )
