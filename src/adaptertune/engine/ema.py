"""Exponential moving average of the trained tensors, and which weights are validated, selected and tested.

Off by default (``train.ema`` unset): the loop then runs the live weights, as without it. With ``train.ema_eval``
the EMA tensors are the ones validated, selected, tested and saved; otherwise ``val_acc_ema`` is logged beside.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import torch
from torch import nn

from ..config import TrainConfig
from ..errors import CheckpointError

__all__ = ["TrainableEma", "ema_metrics", "use_weights"]


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
