"""What a method may prepare for ``fit`` (:meth:`~adaptertune.methods.registry.Method.prepare_fit`): its context
and the model and loaders it returns."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

if TYPE_CHECKING:
    from ..engine import FitResult

__all__ = ["FitContext", "FitInputs"]


@dataclass(frozen=True)
class FitContext:
    """What a method may use to prepare its training inputs (see :meth:`Method.prepare_fit`).

    Args:
        views: the (train, val, test) split datasets (val may be None); a train view of a method that
            trains without augmentation carries the eval transform.
        loader: makes a loader over a view in dataset order, with the run's batch size, workers and collate.
        batch_size: per-process batch size.
        seed: the training seed.
        device: the training device.
        precision: the resolved precision (fp32, bf16, fp16).
    """

    views: tuple[Any, Any, Any]
    loader: Callable[[Any], Iterable]
    batch_size: int
    seed: int
    device: torch.device
    precision: str


@dataclass
class FitInputs:
    """What ``fit`` trains (a model and its three loaders) and how its result maps back to the built model."""

    model: nn.Module
    loaders: tuple[Iterable, Iterable | None, Iterable]
    finish: Callable[[FitResult], FitResult] = field(default=lambda result: result)
