"""Engine callbacks a run writes its folder with: ``metrics.jsonl`` and TensorBoard events."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..atomic import atomic_write_text
from ..extras import require
from .folder import read_jsonl

__all__ = ["MetricsWriter", "TensorBoardWriter"]


class MetricsWriter:
    """Rewrites metrics.jsonl atomically each epoch; a resumed run replaces the lines of redone epochs.

    Each epoch's line also holds ``step_loss``: the training loss of every step of the epoch, in order (6
    significant digits; rank 0's batches under DDP). An epoch resumed from a mid-epoch checkpoint lists only
    the steps run after it (:func:`~adaptertune.runs.folder.step_losses` fills in the rest from the epoch mean).
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.records: list[dict[str, Any]] = []
        self.step_losses: list[float] = []

    def on_train_start(self, total_steps: int, steps_per_epoch: int, start_step: int) -> None:
        self.records = read_jsonl(self.path)
        self.step_losses = []

    def on_step(self, step: int, loss: float, lr: float) -> None:
        self.step_losses.append(float(f"{loss:.6g}"))

    def on_epoch_end(self, metrics: dict[str, Any]) -> None:
        record = {**metrics, "step_loss": self.step_losses}
        self.step_losses = []
        self.records = [r for r in self.records if r.get("epoch", 0) < metrics["epoch"]] + [record]
        atomic_write_text(self.path, "".join(json.dumps(r) + "\n" for r in self.records))


class TensorBoardWriter:
    """Step loss and learning rate, and every numeric epoch metric, as TensorBoard events.

    ``purge_step`` makes a resumed run drop the events an interrupted attempt wrote past its checkpoint.
    """

    def __init__(self, log_dir: Path) -> None:
        require("tensorboard", "train.tensorboard")  # torch.utils.tensorboard needs it
        from torch.utils.tensorboard import SummaryWriter

        self.log_dir, self.make, self.writer = log_dir, SummaryWriter, None

    def on_train_start(self, total_steps: int, steps_per_epoch: int, start_step: int) -> None:
        self.steps_per_epoch = steps_per_epoch
        # events are logged at 1-based step numbers: whatever an earlier attempt wrote past the checkpoint's
        # step (all of it when starting from step 0) is dropped
        self.writer = self.make(str(self.log_dir), purge_step=start_step + 1)

    def on_step(self, step: int, loss: float, lr: float) -> None:
        self.writer.add_scalar("train/loss_step", loss, step + 1)
        self.writer.add_scalar("train/lr", lr, step + 1)

    def on_epoch_end(self, metrics: dict[str, Any]) -> None:
        step = metrics.get("step", metrics["epoch"] * self.steps_per_epoch)
        for key, value in metrics.items():
            if key not in ("epoch", "step", "lr") and isinstance(value, (int, float)):
                self.writer.add_scalar(f"epoch/{key}", value, step)
        self.writer.flush()

    def write_hparams(self, config: dict[str, Any], summary: dict[str, Any]) -> None:
        """The run's config and results for TensorBoard's HParams view (``tensorboard/hparams``), so a sweep's
        runs compare side by side."""
        from ..config_keys import flatten_config

        hparams = {
            k: v if isinstance(v, (int, float, str, bool)) else str(v)
            for k, v in flatten_config(config).items()
            if v is not None
        }
        keys = ("test_acc", "test_acc_last", "best_val_acc", "best_epoch", "train_seconds")
        metrics = {f"hparam/{k}": float(summary[k]) for k in keys if summary.get(k) is not None}
        self.writer.add_hparams(hparams, metrics, run_name="hparams")
        self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
