"""The training loop: ``fit`` reads top to bottom as its steps, each a function a test can call.

    trainer = make_trainer(...)                  # model on the device, DDP, optimizer, EMA, schedule
    state = start_state(trainer, resume)         # fresh, or the checkpoint's TrainState
    for each epoch:
        train_one_epoch(trainer, state, ...)     # steps, step logs, mid-epoch checkpoints (engine/epoch.py)
        validate_and_select(trainer, state, ...) # validation, the selection rule, early stopping
        end_epoch(trainer, state, metrics)       # history, callbacks, the epoch's checkpoint
    final_test(trainer, state, test_loader)      # the last model, then the selected one

Knows nothing of registries: it takes a model, loaders and a resolved TrainConfig
(:func:`adaptertune.resolve.resolve_train_config`).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..config import TrainConfig
from ..errors import ConfigError
from .checkpoint import load_checkpoint, restore_training_state
from .device import autocast_context, cuda_backend_settings
from .distributed import all_true, rank_seed, reduce_sums
from .ema import ema_metrics, use_weights
from .epoch import Callback, Trainer, make_trainer, save_state, train_one_epoch, trainable_state
from .metrics import topk_hits
from .state import TrainState
from .stopping import Selection, check_selection, patience_step

_logger = logging.getLogger(__name__)

__all__ = [
    "EvalOutputs",
    "FitResult",
    "check_resolved",
    "end_epoch",
    "evaluate",
    "evaluate_outputs",
    "final_test",
    "fit",
    "start_state",
    "validate_and_select",
]


@dataclass(frozen=True)
class EvalOutputs:
    """Every image's outputs of one evaluation pass, in the loader's order (CPU arrays)."""

    label: np.ndarray  # (N,) int64
    pred: np.ndarray  # (N,) int64: the top-1 class of the fp32 logits, the one the top-1 accuracy counts
    prob: np.ndarray  # (N, C) float16: softmax of the fp32 logits

    @classmethod
    def from_batches(cls, batches: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]) -> EvalOutputs:
        """From ``(label, pred, prob)`` batches (on any device): one copy to the host at the end."""
        if not batches:
            return cls(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros((0, 0), np.float16))
        label, pred, prob = (torch.cat(parts).cpu().numpy() for parts in zip(*batches, strict=True))
        return cls(label.astype(np.int64), pred.astype(np.int64), prob)


@dataclass
class FitResult:
    best_epoch: int
    best_val_acc: float | None
    test: dict[str, float]  # metrics of the selected model
    test_last: dict[str, float]  # metrics of the last-epoch model
    history: list[dict[str, Any]]
    train_seconds: float
    images_per_second: float
    skipped_images: int
    best_state: dict[str, torch.Tensor] = field(repr=False)  # trainable tensors of the selected model
    selection: Selection
    backend: dict[str, Any] = field(default_factory=dict)  # CUDA math settings the run trained with
    stopped_epoch: int | None = None  # the epoch early stopping ended training at (None: all epochs ran)
    stop_requested_epoch: int | None = None  # the epoch a callback ended training at (None: none asked)
    # the selected model's per-image test outputs; None under torchrun (each rank evaluates a shard)
    test_outputs: EvalOutputs | None = field(default=None, repr=False)


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
    *,
    selection: Selection,
) -> FitResult:
    """Train ``model`` and return the test metrics of the epoch the selection rule picks.

    With ``cfg.early_stop`` (patience P) training ends once validation accuracy has not improved for P
    epochs (:mod:`~adaptertune.engine.stopping`); the counter is part of the checkpoint, so resume stays exact.
    A callback whose ``on_epoch_end`` returns True (a tuning pruner) ends training after that epoch the same way
    (``FitResult.stop_requested_epoch``).
    Under torchrun every rank takes the same steps (:mod:`~adaptertune.engine.epoch`), draws its own dropout /
    drop-path masks (seed :func:`~adaptertune.engine.distributed.rank_seed`) and keeps its own RNG in checkpoints.

    Args:
        cfg: a resolved TrainConfig (:func:`check_resolved`): lr, weight decay, warm-up and precision set.
        selection: ``best_val_top1`` (needs ``val_loader``) or ``last_epoch`` (without one): the rule the run
            records, decided once by :class:`adaptertune.resolve.ResolvedRun`.
        checkpoint_path: where to keep the resume checkpoint (written at the end of every epoch and every
            ``cfg.checkpoint_every_steps`` steps; rank 0 only). None: no checkpoints.
        resume: continue from ``checkpoint_path`` if it exists. With the seeded
            :class:`~adaptertune.data.sampling.ResumableSampler` the result is bitwise the same as an
            uninterrupted run's (same device, precision and thread count).
        mix: timm ``Mixup`` for the training batches (:func:`~adaptertune.engine.backward.make_mixup`), or None.

    Raises:
        NonFiniteLossError: the loss became NaN/inf (names the step); the last checkpoint is kept.
        ConfigError: ``cfg`` is not resolved; the selection rule or ``cfg.early_stop`` does not fit ``val_loader``.
        CheckpointError: the checkpoint to resume from is corrupt, belongs to another model or was trained
            in another precision.
    """
    check_resolved(cfg)
    check_selection(selection, val_loader is not None, cfg.early_stop)
    with cuda_backend_settings(device) as backend:
        tr = make_trainer(model, train_loader, cfg, device, callbacks, checkpoint_path, mix)
        state = start_state(tr, resume)
        for cb in callbacks:
            cb.on_train_start(tr.total_steps, tr.steps_per_epoch, state.step)
        last = state.stopped_epoch or state.stop_requested_epoch or cfg.epochs  # a resumed run that had stopped
        for epoch in range(state.epochs_done + 1, last + 1):
            metrics = train_one_epoch(tr, state, train_loader, epoch)
            validate_and_select(tr, state, val_loader, epoch, metrics, selection)
            end_epoch(tr, state, metrics)
            if state.stopped_epoch is not None:
                _logger.info("early stop at epoch %d: no val improvement for %d epochs", epoch, cfg.early_stop)
            if state.stop_requested_epoch is not None:
                _logger.info("stop at epoch %d, asked by a callback", epoch)
            if state.stopped_epoch is not None or state.stop_requested_epoch is not None:
                break
        test, test_last, test_outputs = final_test(tr, state, test_loader)
        (skipped,) = reduce_sums([state.skipped])
    return FitResult(
        best_epoch=state.best_epoch,
        best_val_acc=state.best_val if selection == Selection.BEST_VAL else None,
        test=test,
        test_last=test_last,
        history=state.history,
        train_seconds=state.train_seconds,
        images_per_second=state.seen / max(state.train_seconds, 1e-9),
        skipped_images=int(skipped),
        best_state=state.best_state,
        selection=selection,
        backend=backend,
        stopped_epoch=state.stopped_epoch,
        stop_requested_epoch=state.stop_requested_epoch,
        test_outputs=test_outputs,
    )


def check_resolved(cfg: TrainConfig) -> None:
    """Raises ConfigError unless every value ``fit`` trains with is decided (nothing ``None`` or ``auto``)."""
    open_ = [f"`train.{k}` is None" for k in ("lr", "weight_decay", "warmup_epochs") if getattr(cfg, k) is None]
    open_ += ["`train.precision` is 'auto'"] if cfg.precision == "auto" else []
    if open_:
        raise ConfigError(
            f"fit() needs a resolved TrainConfig, but {', '.join(open_)}; "
            "resolve it with adaptertune.resolve.resolve_train_config."
        )


def start_state(tr: Trainer, resume: bool) -> TrainState:
    """A fresh state, or with ``resume`` the checkpoint's (model, optimizer, scaler, EMA and RNG restored)."""
    path = tr.checkpoint_path
    if resume and path is not None and path.is_file():
        tensors, meta = load_checkpoint(path)
        state = restore_training_state(tensors, meta, tr.model, tr.optimizer, tr.scaler, str(path), tr.dist.rank)
        state.check_fits(str(path), tr.steps_per_epoch, tr.cfg.precision)
        if tr.ema is not None:
            tr.ema.load(tensors, str(path))
        if not tr.dist.is_main:  # the checkpoint holds the sums of all ranks: rank 0 carries them on
            state.skipped = 0
        _logger.info(
            "resuming at epoch %d, batch %d (step %d)", state.epochs_done + 1, state.batch_in_epoch, state.step
        )
        return state
    if tr.dist.rank > 0:  # own dropout / drop-path masks per rank; rank 0 keeps the single-process stream
        torch.manual_seed(rank_seed(tr.cfg.seed, tr.dist.rank))
    return TrainState(tr.steps_per_epoch, tr.cfg.precision, tr.cfg.lr, best_state=trainable_state(tr.model))


def validate_and_select(
    tr: Trainer, state: TrainState, val_loader: Iterable | None, epoch: int, metrics: dict[str, Any], selection: str
) -> None:
    """Validate epoch ``epoch`` (into ``metrics``) and keep its tensors if the selection rule picks them; with
    ``train.early_stop``, set ``state.stopped_epoch`` once the patience is used up. With ``train.ema_eval`` the
    EMA tensors are validated and selected."""
    with use_weights(tr.ema, tr.cfg):
        if selection == Selection.LAST_EPOCH:  # no validation split: every epoch replaces the one before
            state.best_epoch, state.best_state = epoch, trainable_state(tr.model)
            return
        val = evaluate(tr.model, val_loader, tr.device, tr.cfg.precision)
        metrics.update(val_acc=val["acc"], val_top5=val["top5"], val_loss=val["loss"])
        metrics.update(
            ema_metrics(tr.ema, tr.cfg, lambda: evaluate(tr.model, val_loader, tr.device, tr.cfg.precision))
        )
        es = patience_step(
            val["acc"], state.best_val, state.stale_epochs, tr.cfg.early_stop, tr.cfg.early_stop_min_delta
        )
        state.stale_epochs = es.stale
        if es.best:
            state.best_val, state.best_epoch, state.best_state = val["acc"], epoch, trainable_state(tr.model)
        if es.stop:
            state.stopped_epoch = epoch


def end_epoch(tr: Trainer, state: TrainState, metrics: dict[str, Any]) -> None:
    """Record the finished epoch (history, ``on_epoch_end`` callbacks) and write its checkpoint. A callback
    that returns True ends training after this epoch (``state.stop_requested_epoch``, agreed over ranks)."""
    state.history.append(metrics)
    asked = [bool(cb.on_epoch_end(metrics)) for cb in tr.callbacks]  # every callback sees every epoch
    if not all_true(not any(asked)):  # under torchrun only rank 0 has callbacks
        state.stop_requested_epoch = metrics["epoch"]
    state.epochs_done = metrics["epoch"]
    save_state(tr, state)


def final_test(
    tr: Trainer, state: TrainState, test_loader: Iterable
) -> tuple[dict[str, float], dict[str, float], EvalOutputs | None]:
    """(test metrics of the selected model, of the last one, the selected model's per-image outputs); the
    model keeps the selected tensors. The outputs come from the pass that measures the selected model (no
    second pass); under torchrun they are None (each rank sees a shard)."""
    keep = tr.dist.world_size == 1
    last_is_selected = state.best_epoch == state.epochs_done
    with use_weights(tr.ema, tr.cfg):
        test_last, outputs = _evaluate(tr.model, test_loader, tr.device, tr.cfg.precision, keep and last_is_selected)
    with torch.no_grad():
        params = dict(tr.model.named_parameters())
        for n, v in state.best_state.items():
            params[n].copy_(v)
    if last_is_selected:  # the last model trained is the selected one
        return test_last, test_last, outputs
    test, outputs = _evaluate(tr.model, test_loader, tr.device, tr.cfg.precision, keep)
    return test, test_last, outputs


def evaluate(model: nn.Module, loader: Iterable, device: torch.device, precision: str = "fp32") -> dict[str, float]:
    """Top-1 / top-5 accuracy (%), mean cross-entropy and the count of skipped (corrupt) images over ``loader``.

    The sums stay on the device (float64, exact for counts) and are read once at the end.
    """
    return _evaluate(model, loader, device, precision, keep=False)[0]


def evaluate_outputs(
    model: nn.Module, loader: Iterable, device: torch.device, precision: str = "fp32"
) -> tuple[dict[str, float], EvalOutputs]:
    """:func:`evaluate`'s metrics and, from the same pass, every image's label, top-1 prediction and softmax
    probabilities in the loader's order (a skipped corrupt image has no row)."""
    metrics, outputs = _evaluate(model, loader, device, precision, keep=True)
    return metrics, outputs


@torch.no_grad()
def _evaluate(
    model: nn.Module, loader: Iterable, device: torch.device, precision: str, keep: bool
) -> tuple[dict[str, float], EvalOutputs | None]:
    model.eval()
    sums = torch.zeros(3, dtype=torch.float64, device=device)  # loss sum, top-1 hits, top-5 hits
    n = skipped = 0
    kept: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
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
        if keep:  # top-1 from topk_hits' own call: a tie (likely in fp16 / bf16 logits) breaks as it counts
            pred = logits.topk(min(5, logits.shape[1]), dim=1).indices[:, 0]
            kept.append((y, pred, logits.softmax(dim=1).half()))
    loss_sum, top1, top5 = sums.tolist()
    loss_sum, top1, top5, n, skipped = reduce_sums([loss_sum, top1, top5, n, skipped])
    outputs = EvalOutputs.from_batches(kept) if keep else None
    if n == 0:
        nan = float("nan")
        return {"acc": nan, "top5": nan, "loss": nan, "n": 0, "skipped": int(skipped)}, outputs
    metrics = {
        "acc": 100.0 * top1 / n,
        "top5": 100.0 * top5 / n,
        "loss": loss_sum / n,
        "n": int(n),
        "skipped": int(skipped),
    }
    return metrics, outputs
