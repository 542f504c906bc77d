"""When training stops before its last epoch: early stopping on validation (pure), a non-finite loss.

Early stopping (``train.early_stop`` = patience P): after each epoch, validation accuracy that beats the best
so far by more than ``min_delta`` resets a counter of stale epochs; once P epochs in a row are stale, training
stops. The model that is tested is the best-validation one (any strict improvement), whatever the counter.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..config import TrainConfig
from ..errors import ConfigError, NonFiniteLossError
from .steplog import StepRecord

__all__ = ["PatienceStep", "check_early_stop", "non_finite_error", "patience_step"]


@dataclass(frozen=True)
class PatienceStep:
    best: bool  # a new best validation accuracy: this epoch's model is the one to test
    stale: int  # epochs in a row without an improvement of more than min_delta
    stop: bool  # patience used up: this epoch is the last


def patience_step(acc: float, best: float, stale: int, patience: int | None, min_delta: float = 0.0) -> PatienceStep:
    """One epoch of early stopping: ``acc`` this epoch's validation accuracy, ``best`` the best before it
    (``-inf`` at the start), ``stale`` the stale epochs before it; ``patience`` None never stops."""
    stale = 0 if acc > best + min_delta else stale + 1
    return PatienceStep(best=acc > best, stale=stale, stop=patience is not None and stale >= patience)


def check_early_stop(cfg: TrainConfig, has_val: bool) -> None:
    """Raises ConfigError when early stopping is asked for without a validation split to watch."""
    if cfg.early_stop is not None and not has_val:
        raise ConfigError(
            f"`train.early_stop` {cfg.early_stop} needs a validation split; set `data.val_fraction` > 0 or "
            "`data.val_subset`, or drop `train.early_stop`."
        )


def non_finite_error(
    bad: StepRecord | None, step: int, steps_per_epoch: int, lr: float, detected: int
) -> NonFiniteLossError:
    """The error for a loss that became NaN/inf at ``step`` (``bad``: this process's record of it, if any)."""
    value = bad.loss if bad is not None and bad.step == step else "non-finite (on another process)"
    return NonFiniteLossError(
        f"Loss became {value} at step {step} (epoch {step // steps_per_epoch + 1}); lower the learning rate "
        f"(now {lr:.3g}) or use fp32. The last good checkpoint is kept (checked at step {detected})."
    )
