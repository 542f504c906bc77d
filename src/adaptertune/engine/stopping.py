"""Which epoch's model is tested (the selection rule) and when training stops before its last epoch: early
stopping on validation (pure), a non-finite loss.

Early stopping (``train.early_stop`` = patience P): after each epoch, validation accuracy that beats the best
so far by more than ``min_delta`` resets a counter of stale epochs; once P epochs in a row are stale, training
stops. The model that is tested is the best-validation one (any strict improvement), whatever the counter.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from ..errors import ConfigError, NonFiniteLossError
from .steplog import StepRecord

__all__ = ["PatienceStep", "Selection", "check_selection", "non_finite_error", "patience_step"]


class Selection(StrEnum):
    """The selection rule: which epoch's model a run tests and saves (the protocol and summary record it)."""

    BEST_VAL = "best_val_top1"  # the epoch of the best validation top-1 (the first of equal ones)
    LAST_EPOCH = "last_epoch"  # the last epoch trained (no validation split)


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


def check_selection(selection: str, has_val: bool, early_stop: int | None) -> None:
    """The selection rule and early stopping (patience ``early_stop``) fit the validation split (``has_val``).

    Raises:
        ConfigError: they do not.
    """
    if early_stop is not None and not has_val:
        raise ConfigError(
            f"`train.early_stop` {early_stop} needs a validation split; set `data.val_fraction` > 0 or "
            "`data.val_subset`, or drop `train.early_stop`."
        )
    if selection not in tuple(Selection):
        raise ConfigError(f"The selection rule must be one of {', '.join(Selection)}; got {selection!r}.")
    if (selection == Selection.BEST_VAL) != has_val:
        which = "needs a validation split" if has_val is False else "ignores the validation split given"
        want = Selection.LAST_EPOCH if not has_val else Selection.BEST_VAL
        raise ConfigError(f"The selection rule {str(selection)!r} {which}; select {str(want)!r}.")


def non_finite_error(
    bad: StepRecord | None, step: int, steps_per_epoch: int, lr: float, detected: int
) -> NonFiniteLossError:
    """The error for a loss that became NaN/inf at ``step`` (``bad``: this process's record of it, if any)."""
    value = bad.loss if bad is not None and bad.step == step else "non-finite (on another process)"
    return NonFiniteLossError(
        f"Loss became {value} at step {step} (epoch {step // steps_per_epoch + 1}); lower the learning rate "
        f"(now {lr:.3g}) or use fp32. The last good checkpoint is kept (checked at step {detected})."
    )
