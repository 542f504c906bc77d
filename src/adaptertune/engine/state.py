"""The training loop's state: what a checkpoint holds besides the model, optimizer, scaler, RNG and EMA tensors.

:class:`TrainState` is read and changed by the loop's steps (:mod:`~adaptertune.engine.epoch`,
:mod:`~adaptertune.engine.loop`) and is, field for field, the ``state`` document of a checkpoint
(:meth:`TrainState.to_meta` / :meth:`TrainState.from_meta`); the selected model's tensors travel as the
checkpoint's ``best.*`` tensors.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

import torch

from ..errors import CheckpointError

__all__ = ["TrainState"]


@dataclass
class TrainState:
    """Where training stands. Between steps ``sums``, ``batch_in_epoch`` and ``epoch_seconds`` are zero; a
    mid-epoch checkpoint stores the partial epoch in them (sums over all ranks), and ``skipped`` is this
    rank's count while training, all ranks' in a checkpoint."""

    steps_per_epoch: int  # of the run that wrote it: a resumed run must have the same
    precision: str  # fp32, bf16 or fp16: a resumed run must train in the same
    lr: float  # the learning rate of the last step taken
    epochs_done: int = 0
    batch_in_epoch: int = 0  # batches done of epoch epochs_done + 1
    step: int = 0  # optimizer steps done
    sums: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.0])  # loss sum, correct, count
    epoch_seconds: float = 0.0
    skipped: int = 0  # corrupt training images so far
    seen: int = 0  # training images of the completed epochs
    train_seconds: float = 0.0
    best_val: float = -math.inf  # the best validation accuracy so far
    best_epoch: int = 0  # the epoch selected so far (0: none yet)
    stale_epochs: int = 0  # early stopping: epochs since validation last improved by more than min_delta
    stopped_epoch: int | None = None  # the epoch early stopping ended training at
    stop_requested_epoch: int | None = None  # the epoch a callback ended training at (on_epoch_end returned True)
    history: list[dict[str, Any]] = field(default_factory=list)  # every completed epoch's metrics
    # the selected model's trainable tensors (checkpoint tensors ``best.*``, not part of the meta)
    best_state: dict[str, torch.Tensor] = field(default_factory=dict, repr=False)

    def to_meta(self) -> dict[str, Any]:
        """The JSON document a checkpoint stores as its ``state`` (every field but ``best_state``)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "best_state"}

    @classmethod
    def from_meta(cls, meta: dict[str, Any], best_state: dict[str, torch.Tensor], source: str) -> TrainState:
        """The state :meth:`to_meta` wrote, with the checkpoint's ``best.*`` tensors.

        Raises:
            CheckpointError: a key is missing or unknown (written by another version of adaptertune).
        """
        names = {f.name for f in dataclasses.fields(cls)} - {"best_state"}
        missing, unknown = sorted(names - set(meta)), sorted(set(meta) - names)
        if missing or unknown:
            what = f"lacks {', '.join(missing)}" if missing else f"has unknown {', '.join(unknown)}"
            raise CheckpointError(
                f"{source}: the loop state {what} (written by another adaptertune version); "
                "train again, or resume with that version."
            )
        return cls(**meta, best_state=best_state)

    def check_fits(self, source: str, steps_per_epoch: int, precision: str) -> None:
        """This state (from ``source``) can be continued by a run with these steps per epoch and precision.

        Raises:
            CheckpointError: it cannot.
        """
        if self.steps_per_epoch != steps_per_epoch:
            raise CheckpointError(
                f"{source} was written with {self.steps_per_epoch} steps per epoch, this run has "
                f"{steps_per_epoch}; resume with the same data, batch size and number of processes."
            )
        if self.precision != precision:
            raise CheckpointError(
                f"{source} was trained in {self.precision}, this run would continue in {precision}; resume with "
                f"--precision {self.precision} (the precision changes the numbers)."
            )
