"""Per-step training records kept on the device and read in one transfer, so a step never waits for the device.

The loop calls :meth:`StepLog.add` after every forward (a 2-element float64 tensor: loss, correct count)
and :meth:`StepLog.read` at log points, checkpoints and epoch ends: one ``tolist`` copies all pending
records to the host, where the loss values feed the callbacks, the epoch sums and the NaN/inf check.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

__all__ = ["StepLog", "StepRecord", "first_non_finite"]


@dataclass(frozen=True)
class StepRecord:
    step: int  # 0-based optimizer step
    epoch: int  # 1-based
    lr: float
    n: int  # images in this rank's batch
    loss: float  # mean training loss of the batch
    correct: int  # top-1 hits of the batch


class StepLog:
    """Pending step records: host-side metadata plus device-side (loss, correct) values."""

    def __init__(self) -> None:
        self._values: list[torch.Tensor] = []
        self._meta: list[tuple[int, int, float, int]] = []

    def __len__(self) -> int:
        return len(self._meta)

    def add(self, step: int, epoch: int, lr: float, loss: torch.Tensor, logits: torch.Tensor, y: torch.Tensor) -> None:
        """Record one step; ``loss`` is the scalar training loss, ``logits`` (B, C) and ``y`` (B,) its batch."""
        correct = (logits.detach().argmax(1) == y).sum()
        # float64 holds an fp32 loss and any count exactly, so the host sums equal per-step float() reads
        self._values.append(torch.stack((loss.detach().double(), correct.double())))
        self._meta.append((step, epoch, lr, y.numel()))

    def read(self) -> list[StepRecord]:
        """All pending records, oldest first (one device-to-host copy); the log is empty afterwards."""
        if not self._meta:
            return []
        values = torch.stack(self._values).tolist()  # (k, 2): the only host sync of these k steps
        records = [StepRecord(*m, v[0], int(v[1])) for m, v in zip(self._meta, values, strict=True)]
        self._values, self._meta = [], []
        return records


def first_non_finite(records: Sequence[StepRecord]) -> StepRecord | None:
    """The earliest record whose loss is NaN or inf (None: all finite). Pure."""
    return next((r for r in records if not math.isfinite(r.loss)), None)
