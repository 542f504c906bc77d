"""One training epoch: the parts a fit builds once (:class:`Trainer`), its steps, step logs and checkpoints.

A step does not wait for the device: losses and hits are read every ``train.log_every_steps`` steps, at
checkpoints and at epoch ends (:func:`flush`), and checked for NaN/inf there. Under torchrun every rank takes
the same steps (one whose batch is all corrupt joins with zero gradients) and draws its own dropout masks.
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn

from ..config import TrainConfig
from ..errors import DataError
from ..vit import input_shape
from .backward import StepRunner, prepare_model
from .checkpoint import gather_rank_rng, save_checkpoint
from .device import autocast_context
from .distributed import DistInfo, current, rank_seed, reduce_min, reduce_sums, wrap_ddp
from .ema import TrainableEma
from .optim import build_optimizer, warmup_cosine
from .state import TrainState
from .steplog import StepLog, first_non_finite
from .stopping import non_finite_error

__all__ = ["Callback", "Trainer", "make_trainer", "save_state", "train_one_epoch", "trainable_state"]


class Callback(Protocol):
    """Progress hooks (the CLI draws bars with them; runs/ writes metrics.jsonl).

    ``on_step`` is called once per step, in order, but in bursts: at every ``train.log_every_steps``-th
    step, before each checkpoint and at the end of each epoch (the losses are read from the device there).
    """

    def on_train_start(self, total_steps: int, steps_per_epoch: int, start_step: int) -> None:
        """``start_step``: optimizer steps already done (non-zero when resuming)."""

    def on_step(self, step: int, loss: float, lr: float) -> None: ...

    def on_epoch_end(self, metrics: dict[str, Any]) -> bool | None:
        """True asks the loop to end training after this epoch (like early stopping; resume keeps it)."""


@dataclass
class Trainer:
    """What every step of one fit uses, built once by :func:`make_trainer`."""

    model: nn.Module  # parameters, selection and checkpoints
    net: nn.Module  # forward/backward: the DDP wrapper of ``model`` under torchrun
    forward: Callable  # ``net``, or ``torch.compile(net)`` with ``train.compile``
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler  # enabled for fp16 only
    ema: TrainableEma | None
    runner: StepRunner
    trainable: list[nn.Parameter]  # what gradient clipping clips
    cfg: TrainConfig  # resolved: lr, weight decay, warm-up and precision set
    device: torch.device
    dist: DistInfo
    steps_per_epoch: int
    total_steps: int
    warmup_steps: int
    callbacks: Sequence[Callback] = ()
    checkpoint_path: Path | None = None
    log: StepLog = field(default_factory=StepLog)
    in_shape: torch.Size | None = None  # of this rank's last non-empty batch (a stand-in batch's shape)
    # ``before_train_step(step)`` of every module that has one, called before each optimizer step's forward
    # (a module that changes with the step index, e.g. nested adapters drawing the step's rank)
    step_hooks: list[Callable[[int], None]] = field(default_factory=list)

    def lr_at(self, step: int) -> float:
        """The scheduled learning rate of optimizer step ``step``."""
        return warmup_cosine(step, self.total_steps, self.warmup_steps, self.cfg.lr, self.cfg.min_lr)


def make_trainer(
    model: nn.Module,
    train_loader: Iterable,
    cfg: TrainConfig,
    device: torch.device,
    callbacks: Sequence[Callback] = (),
    checkpoint_path: str | Path | None = None,
    mix: Any = None,
) -> Trainer:
    """Move ``model`` to ``device`` and build its DDP wrapper, optimizer, grad scaler, EMA and schedule."""
    model.to(device)
    prepare_model(model, cfg)
    net = wrap_ddp(model, device)
    dist = current()
    sampler = getattr(train_loader, "sampler", None)
    steps_per_epoch = (
        len(train_loader) if not hasattr(sampler, "per_rank") else -(-sampler.per_rank() // sampler.batch_size)
    )
    total_steps = cfg.epochs * steps_per_epoch
    return Trainer(
        model=model,
        net=net,
        forward=torch.compile(net) if cfg.compile else net,
        optimizer=build_optimizer(
            model, cfg.lr, cfg.weight_decay, cfg.decay_all, optimizer=cfg.optimizer, layer_decay=cfg.layer_decay
        ),
        scaler=torch.amp.GradScaler(device.type, enabled=cfg.precision == "fp16"),
        ema=TrainableEma(model, cfg.ema) if cfg.ema else None,
        runner=StepRunner(cfg, cfg.precision, device, mix, seed=rank_seed(cfg.seed, dist.rank)),
        trainable=[p for p in model.parameters() if p.requires_grad],
        cfg=cfg,
        device=device,
        dist=dist,
        steps_per_epoch=steps_per_epoch,
        total_steps=total_steps,
        warmup_steps=min(int(round(cfg.warmup_epochs * steps_per_epoch)), max(total_steps - 1, 0)),
        callbacks=callbacks,
        checkpoint_path=Path(checkpoint_path) if checkpoint_path is not None else None,
        step_hooks=[m.before_train_step for m in model.modules() if callable(getattr(m, "before_train_step", None))],
    )


def trainable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """A copy of ``model``'s trainable tensors (the selected model's, kept as ``TrainState.best_state``)."""
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def train_one_epoch(tr: Trainer, state: TrainState, loader: Iterable, epoch: int) -> dict[str, Any]:
    """Train epoch ``epoch`` (from the batch a mid-epoch checkpoint stopped at); returns its training metrics.

    Writes a checkpoint every ``train.checkpoint_every_steps`` steps (not at the epoch's last batch: the
    epoch-end checkpoint follows validation).
    """
    skip = state.batch_in_epoch
    # a resumed epoch starts from the saved sums on rank 0 only, so the epoch-end reduction adds up
    sums = list(state.sums) if skip and tr.dist.is_main else [0.0, 0.0, 0.0]
    prior_seconds = state.epoch_seconds if skip else 0.0
    state.batch_in_epoch, state.sums, state.epoch_seconds = 0, [0.0, 0.0, 0.0], 0.0
    tr.net.train()
    t0 = time.perf_counter()
    every = tr.cfg.checkpoint_every_steps
    for b, batch in enumerate(_start_epoch(loader, epoch, skip), start=skip):
        train_step(tr, state, batch, epoch)
        checkpoint_due = bool(every) and state.step % every == 0 and b + 1 < tr.steps_per_epoch
        if checkpoint_due or state.step % tr.cfg.log_every_steps == 0:
            flush(tr, sums, state.step)
        if checkpoint_due:
            save_state(tr, state, b + 1, sums, prior_seconds + time.perf_counter() - t0)
    flush(tr, sums, state.step)
    if tr.device.type == "cuda":
        torch.cuda.synchronize(tr.device)
    epoch_seconds = prior_seconds + time.perf_counter() - t0
    loss_sum, correct, count = reduce_sums(sums)
    state.train_seconds += epoch_seconds
    state.seen += int(count)
    return {
        "epoch": epoch,
        "step": state.step,
        "lr": state.lr,
        "train_loss": loss_sum / max(count, 1),
        "train_acc": 100.0 * correct / max(count, 1),
        "epoch_seconds": epoch_seconds,
        "train_images_per_second": count / max(epoch_seconds, 1e-9),
    }


def train_step(tr: Trainer, state: TrainState, batch: Sequence, epoch: int) -> None:
    """One optimizer step on ``batch`` ``(images, labels[, n_skipped])`` at the scheduled learning rate."""
    x, y = batch[0].to(tr.device, non_blocking=True), batch[1].to(tr.device, non_blocking=True)
    state.skipped += batch[2] if len(batch) > 2 else 0
    state.lr = lr = tr.lr_at(state.step)
    for g in tr.optimizer.param_groups:
        g["lr"] = lr * g["lr_scale"] if "lr_scale" in g else lr  # lr_scale: timm's layer decay
    for hook in tr.step_hooks:
        hook(state.step)
    loss = None
    if y.numel() > 0:
        tr.in_shape = x.shape[1:]
        loss, logits = tr.runner.run(tr.forward, tr.net, x, y, tr.scaler, state.step)  # forward + backward
        tr.log.add(state.step, epoch, lr, loss, logits, y)
    elif tr.dist.enabled:  # all corrupt here: join the others' gradient all-reduce with zero gradients
        with autocast_context(tr.cfg.precision, tr.device):
            loss = tr.forward(_stand_in_batch(tr.model, tr.in_shape, tr.device)).float().sum() * 0.0
        tr.scaler.scale(loss).backward()
    if loss is not None:  # a single process skips a batch with no images
        if tr.cfg.grad_clip is not None:
            tr.scaler.unscale_(tr.optimizer)
            torch.nn.utils.clip_grad_norm_(tr.trainable, tr.cfg.grad_clip)
        tr.scaler.step(tr.optimizer)
        tr.scaler.update()
        tr.optimizer.zero_grad(set_to_none=True)
        if tr.ema is not None:
            tr.ema.update()
    state.step += 1


def flush(tr: Trainer, sums: list[float], step: int) -> None:
    """Read the pending steps: NaN/inf check (agreed over ranks), epoch ``sums``, ``on_step`` callbacks.

    Raises:
        NonFiniteLossError: a pending step's loss is NaN/inf (``step``: the step it was found at).
    """
    records = tr.log.read()
    bad = first_non_finite(records)
    first_bad = reduce_min(bad.step if bad is not None else math.inf)
    for r in records:
        if r.step >= first_bad:
            break
        sums[0] += r.loss * r.n
        sums[1] += r.correct
        sums[2] += r.n
        for cb in tr.callbacks:
            cb.on_step(r.step, r.loss, r.lr)
    if math.isfinite(first_bad):
        bad_step = int(first_bad)
        raise non_finite_error(bad, bad_step, tr.steps_per_epoch, tr.lr_at(bad_step), step)


def save_state(
    tr: Trainer,
    state: TrainState,
    batch_in_epoch: int = 0,
    sums: Sequence[float] = (0.0, 0.0, 0.0),
    epoch_seconds: float = 0.0,
) -> None:
    """Write the resume checkpoint (rank 0), ``batch_in_epoch`` batches into the epoch after
    ``state.epochs_done`` with that partial epoch's ``sums`` and seconds (zero at an epoch's end).

    Every rank joins the reduction of the sums and the gather of the RNG states.
    """
    *g_sums, g_skipped = reduce_sums([*sums, state.skipped])
    rank_rng = gather_rank_rng(tr.dist)
    if tr.checkpoint_path is None or not tr.dist.is_main:
        return
    saved = replace(
        state, batch_in_epoch=batch_in_epoch, sums=g_sums, skipped=int(g_skipped), epoch_seconds=epoch_seconds
    )
    extra = tr.ema.state() if tr.ema is not None else None
    save_checkpoint(tr.checkpoint_path, tr.model, tr.optimizer, tr.scaler, saved, rank_rng, extra)


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
    shape = input_shape(model) if shape is None else shape
    if shape is None:
        raise DataError(
            "Every image of this process's first batch is corrupt and the model does not tell its input size; "
            "remove the corrupt images (adaptertune check-data) or train with one process."
        )
    return torch.zeros((1, *shape), device=device)
