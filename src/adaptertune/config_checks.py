"""Field checks of the config dataclasses and the methods' options classes (they coerce YAML / CLI strings), and
placement parsing (pure: which blocks a method adapts)."""

from __future__ import annotations

import math
from typing import Any

from .errors import ConfigError

__all__ = ["parse_placement"]


# ---------------------------------------------------------------- field checks (coerce YAML/CLI strings)
def _as_int(name: str, value: Any, minimum: int | None = None) -> int:
    if isinstance(value, str):
        try:
            value = int(value.strip())
        except ValueError:
            raise ConfigError(f"`{name}` must be an integer, got {value!r}.") from None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"`{name}` must be an integer, got {value!r}.")
    if minimum is not None and value < minimum:
        raise ConfigError(f"`{name}` must be an integer >= {minimum}, got {value}.")
    return value


def _as_float(name: str, value: Any, minimum: float | None = None, exclusive: bool = False) -> float:
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            raise ConfigError(f"`{name}` must be a number, got {value!r}.") from None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"`{name}` must be a number, got {value!r}.")
    value = float(value)
    if not math.isfinite(value):
        raise ConfigError(f"`{name}` must be a finite number, got {value}.")
    if minimum is not None and (value <= minimum if exclusive else value < minimum):
        raise ConfigError(f"`{name}` must be {'>' if exclusive else '>='} {minimum:g}, got {value:g}.")
    return value


def _as_probability(name: str, value: Any) -> float:
    """``value`` as a float in [0, 1) (a dropout or drop-path rate)."""
    value = _as_float(name, value, minimum=0.0)
    if value >= 1:
        raise ConfigError(f"`{name}` must be in [0, 1), got {value:g}.")
    return value


def _as_bool(name: str, value: Any) -> bool:
    if isinstance(value, str) and value.strip().lower() in ("true", "false", "yes", "no", "1", "0"):
        return value.strip().lower() in ("true", "yes", "1")
    if not isinstance(value, bool):
        raise ConfigError(f"`{name}` must be true or false, got {value!r}.")
    return value


def _as_choice(name: str, value: Any, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise ConfigError(f"`{name}` must be one of {', '.join(choices)}; got {value!r}.")
    return value


def _optional(check, name: str, value: Any, *args: Any, **kwargs: Any) -> Any:
    if value is None or (isinstance(value, str) and value.strip().lower() in ("none", "null", "")):
        return None
    return check(name, value, *args, **kwargs)


# ---------------------------------------------------------------- placement (pure)
def parse_placement(placement: str | list[int] | tuple[int, ...], depth: int) -> list[int]:
    """Resolve a placement spec to sorted block indices.

    Accepted: ``"all"``, ``"every:K"`` (blocks 0, K, 2K, ...), ``"first:N"``, ``"last:N"``, a list of
    indices, or the same list as a string (``"0,5,11"``). Negative indices count from the end.

    Raises:
        ConfigError: the spec is malformed or names a block outside ``0..depth-1``.
    """
    accepted = "accepted: all, every:K, first:N, last:N, or block indices like 0,5,11"
    if isinstance(placement, str):
        spec = placement.strip().lower()
        if spec == "all":
            return list(range(depth))
        kind, _, arg = spec.partition(":")
        if kind in ("every", "first", "last"):
            if not arg.strip().isdigit() or int(arg) < 1:
                raise ConfigError(f"Bad placement '{placement}': `{kind}:` needs a positive integer; {accepted}.")
            n = int(arg)
            if kind == "every":
                return list(range(0, depth, n))
            if n > depth:
                raise ConfigError(f"Bad placement '{placement}': the backbone has only {depth} blocks.")
            return list(range(n)) if kind == "first" else list(range(depth - n, depth))
        try:
            placement = [int(p) for p in spec.strip("[]").split(",") if p.strip()]
        except ValueError:
            raise ConfigError(f"Unknown placement '{placement}'; {accepted}.") from None
    if isinstance(placement, int) and not isinstance(placement, bool):
        placement = [placement]
    if not isinstance(placement, list | tuple) or not placement:
        raise ConfigError(f"Unknown placement {placement!r}; {accepted}.")
    blocks = []
    for p in placement:
        if isinstance(p, bool) or not isinstance(p, int) or not -depth <= p < depth:
            raise ConfigError(f"Placement block index {p!r} is out of range: the backbone has blocks 0..{depth - 1}.")
        blocks.append(p % depth)
    if len(set(blocks)) != len(blocks):
        raise ConfigError(f"Placement {list(placement)} names a block twice.")
    return sorted(blocks)


def _check_placement_syntax(value: Any) -> str | list[int]:
    """Validate a placement spec without knowing the depth (large depth: only syntax is checked)."""
    if isinstance(value, tuple):
        value = list(value)
    if not isinstance(value, list):
        parse_placement(value, depth=10**6)
    elif not value or any(isinstance(p, bool) or not isinstance(p, int) for p in value):
        raise ConfigError(f"Placement list must hold block indices (integers), got {value!r}.")
    return value


def _check_cv(folds: Any, fold: Any, **exclusive: Any) -> tuple[int | None, int | None]:
    """``data.cv_folds`` / ``data.cv_fold``: K >= 2 and 0 <= i < K together, or neither; never with the data
    keys in ``exclusive`` (subsets, a published split), since the folds define the train and test sets."""
    folds = _optional(_as_int, "data.cv_folds", folds)
    fold = _optional(_as_int, "data.cv_fold", fold)
    if folds is None:
        if fold is not None:
            raise ConfigError(f"`data.cv_fold` {fold} needs `data.cv_folds` (the number of folds, >= 2).")
        return None, None
    if folds < 2:
        raise ConfigError(f"`data.cv_folds` must be an integer >= 2 (or unset), got {folds}.")
    if fold is None or not 0 <= fold < folds:
        raise ConfigError(f"`data.cv_fold` must be one of 0..{folds - 1} with `data.cv_folds` {folds}, got {fold}.")
    for key, value in exclusive.items():
        if value is not None:
            raise ConfigError(
                f"`data.{key}` {value!r} cannot be combined with `data.cv_folds` (the folds define the training "
                "and test sets); unset one of them."
            )
    return folds, fold


def _check_recipe(train: Any) -> None:
    """The recipe fields of a TrainConfig (optimizer, layer decay, EMA, accumulation, checkpointing)."""
    if not isinstance(train.optimizer, str) or not train.optimizer.strip():
        raise ConfigError(
            f"`train.optimizer` must be a timm optimizer name (e.g. adamw, sgd), got {train.optimizer!r}."
        )
    train.layer_decay = _optional(_as_float, "train.layer_decay", train.layer_decay, minimum=0.0, exclusive=True)
    if train.layer_decay is not None and train.layer_decay > 1:
        raise ConfigError(f"`train.layer_decay` must be in (0, 1], got {train.layer_decay:g}.")
    train.ema = _optional(_as_float, "train.ema", train.ema, minimum=0.0, exclusive=True)
    if train.ema is not None and train.ema >= 1:
        raise ConfigError(f"`train.ema` (the EMA decay) must be in (0, 1), got {train.ema:g}.")
    train.ema_eval = _as_bool("train.ema_eval", train.ema_eval)
    if train.ema_eval and train.ema is None:
        raise ConfigError("`train.ema_eval` true needs `train.ema` (a decay such as 0.999).")
    train.accum_steps = _as_int("train.accum_steps", train.accum_steps, minimum=1)
    if train.accum_steps > train.batch_size:
        raise ConfigError(
            f"`train.accum_steps` {train.accum_steps} is more than `train.batch_size` {train.batch_size} images."
        )
    train.grad_checkpointing = _as_bool("train.grad_checkpointing", train.grad_checkpointing)
