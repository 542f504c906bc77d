"""Hyper-parameter selection on validation (pure): the ``tune`` block, its budget and the selection rule.

A sweep spec may tune the learning rate (and weight decay) of its points::

    tune: {train.lr: default}           # every point: its method's grid (Method.lr_grid)
    tune_budget: {epochs: 2, seeds: [0]}   # optional; default: the point's own epochs, its first seed
    # reuse: true (the default): a final run identical to a tuning run is that run, tested after the choice
    # or trained out and cut by successive halving (Optuna; the `tune` extra):
    # tune_budget: {epochs: 27, early_stop: 3, pruner: {name: halving, min_epochs: 1, reduction: 3}}
    grid:
      train.seed: [0, 1, 2]
      method:
        - {method: full, tune: {train.lr: [1e-5, 3e-5, 1e-4]}}   # this entry's own grid
        - {method: adapter, adapter.rank: 16}                    # the spec's block
        - {method: head, tune: {}}                               # not tuned

Each value (each combination, when both keys are tuned) is trained for the budget and scored by the mean,
over the budget's seeds, of its best checkpoint's validation top-1 (:data:`RULE`). :func:`select` sees
those scores and nothing else; the tuning runs never evaluate the test set
(:mod:`adaptertune.sweeps.tuning_runs` runs them). With a pruner, a run that falls behind the others at
epoch ``min_epochs * reduction**k`` is stopped there (:mod:`adaptertune.sweeps.pruning`) and is no candidate
(:func:`rule` states it).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import ConfigError

__all__ = [
    "DEFAULT_WORDS",
    "RULE",
    "TUNABLE",
    "Halving",
    "TuneBudget",
    "check_block",
    "combinations",
    "parse_budget",
    "parse_pruner",
    "resolve_grid",
    "rule",
    "select",
]

TUNABLE = ("train.lr", "train.weight_decay")  # also the order of a combination's values (lr first)
DEFAULT_WORDS = ("default", "auto")  # `train.lr: default`: the method's own grid
RULE = (
    "highest mean best-checkpoint validation top-1 over the budget seeds; exact ties go to the smaller value "
    "(lr first, then weight decay); tuning runs never evaluate the test set"
)


@dataclass(frozen=True)
class Halving:
    """Successive halving (Optuna's ``SuccessiveHalvingPruner``): at epochs ``min_epochs * reduction**k`` a
    tuning run goes on only if its best validation accuracy so far is among the best ``n // reduction`` (at
    least the best one) of the ``n`` runs that have reached that epoch, itself included."""

    min_epochs: int = 1
    reduction: int = 3

    def to_dict(self) -> dict[str, Any]:
        return {"name": "halving", "min_epochs": self.min_epochs, "reduction": self.reduction}


@dataclass(frozen=True)
class TuneBudget:
    """How long each tuning run trains. None: the point's own ``train.epochs`` / its first seed /
    its own ``train.early_stop``; ``pruner`` None: every run trains its whole budget (the full grid).
    ``reuse``: a final run whose config is the selected tuning run's (same seed, values, budget) is not trained
    again: that run's selected model is tested after the choice (:mod:`adaptertune.sweeps.reuse`)."""

    epochs: int | None = None
    seeds: tuple[int, ...] | None = None
    early_stop: int | None = None
    pruner: Halving | None = None
    reuse: bool = True


def check_block(block: Any, where: str = "tune") -> dict[str, Any]:
    """Validate a ``tune`` block: ``{key: [values] | "default"}`` with keys from :data:`TUNABLE`.

    Returns the block with lists of floats (``{}`` or None: no tuning).

    Raises:
        ConfigError: not a mapping, an unknown key, an empty / non-positive / repeated list, or ``default``
            for a key without a method grid (only ``train.lr`` has one).
    """
    if block is None:
        return {}
    if not isinstance(block, dict):
        raise ConfigError(f"`{where}` must map {' / '.join(TUNABLE)} to a list of values, got {block!r}.")
    out: dict[str, Any] = {}
    for key, values in block.items():
        if key not in TUNABLE:
            raise ConfigError(f"`{where}` cannot tune '{key}'; tunable keys: {', '.join(TUNABLE)}.")
        if isinstance(values, str) and values in DEFAULT_WORDS:
            if key != "train.lr":
                raise ConfigError(f"`{where}.{key}` has no method default grid; give a list of values.")
            out[key] = "default"
            continue
        if not isinstance(values, list) or not values:
            raise ConfigError(f"`{where}.{key}` must be a non-empty list of numbers or 'default', got {values!r}.")
        try:
            floats = [float(v) for v in values]  # YAML reads 1e-3 as a string
        except (TypeError, ValueError):
            raise ConfigError(f"`{where}.{key}` must be a list of numbers, got {values!r}.") from None
        zero_ok = key == "train.weight_decay"  # no decay is a value; a zero learning rate is not
        if any(not math.isfinite(v) or v < 0 or (v == 0 and not zero_ok) for v in floats):
            bound = ">= 0" if zero_ok else "> 0"
            raise ConfigError(f"`{where}.{key}` values must be finite and {bound}, got {values!r}.")
        if len(set(floats)) != len(floats):
            raise ConfigError(f"`{where}.{key}` repeats a value: {values!r}.")
        out[key] = floats
    return out


def _is_int(v: Any, low: int) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= low


def parse_budget(d: Any) -> TuneBudget:
    """``{epochs: E, seeds: [0], early_stop: P, pruner: ..., reuse: true}`` (any may be left out) as a
    :class:`TuneBudget`.

    Raises:
        ConfigError: unknown key, epochs or early_stop < 1, seeds not a non-empty list of integers >= 0, a bad
            pruner (:func:`parse_pruner`), a pruner with more than one seed (each tuning run is one trial), or
            ``reuse`` not true or false.
    """
    if d is None:
        return TuneBudget()
    if not isinstance(d, dict) or set(d) - {"epochs", "seeds", "early_stop", "pruner", "reuse"}:
        raise ConfigError(f"`tune_budget` takes `epochs`, `seeds`, `early_stop`, `pruner` and `reuse`, got {d!r}.")
    reuse = d.get("reuse", True)
    if not isinstance(reuse, bool):
        raise ConfigError(f"`tune_budget.reuse` must be true or false, got {reuse!r}.")
    epochs, seeds, early_stop = d.get("epochs"), d.get("seeds"), d.get("early_stop")
    if epochs is not None and not _is_int(epochs, 1):
        raise ConfigError(f"`tune_budget.epochs` must be an integer >= 1, got {epochs!r}.")
    if early_stop is not None and not _is_int(early_stop, 1):
        raise ConfigError(
            f"`tune_budget.early_stop` must be a patience in epochs, an integer >= 1, got {early_stop!r}."
        )
    if seeds is not None:
        ok = isinstance(seeds, list) and seeds and all(isinstance(s, int) and not isinstance(s, bool) for s in seeds)
        if not ok or min(seeds) < 0 or len(set(seeds)) != len(seeds):
            raise ConfigError(f"`tune_budget.seeds` must be a list of distinct integers >= 0, got {seeds!r}.")
        seeds = tuple(seeds)
    pruner = parse_pruner(d.get("pruner"))
    if pruner is not None and seeds is not None and len(seeds) > 1:
        raise ConfigError(
            f"`tune_budget.pruner` halving needs one seed in `tune_budget.seeds` (each tuning run is one trial "
            f"judged alone), got {list(seeds)}; give one seed or `pruner: none`."
        )
    return TuneBudget(epochs, seeds, early_stop, pruner, reuse)


def parse_pruner(value: Any) -> Halving | None:
    """``none`` (or None), ``halving`` or ``{name: halving, min_epochs: 1, reduction: 3}`` (defaults as shown).

    Raises:
        ConfigError: another name or key, ``min_epochs`` < 1, ``reduction`` < 2.
    """
    if value is None or value == "none":
        return None
    if value == "halving":
        return Halving()
    if (
        not isinstance(value, dict)
        or value.get("name") != "halving"
        or set(value) - {"name", "min_epochs", "reduction"}
    ):
        raise ConfigError(
            f"`tune_budget.pruner` must be none, halving or {{name: halving, min_epochs: M, reduction: R}}, "
            f"got {value!r}."
        )
    min_epochs, reduction = value.get("min_epochs", 1), value.get("reduction", 3)
    if not _is_int(min_epochs, 1):
        raise ConfigError(f"`tune_budget.pruner.min_epochs` must be an integer >= 1, got {min_epochs!r}.")
    if not _is_int(reduction, 2):
        raise ConfigError(f"`tune_budget.pruner.reduction` must be an integer >= 2, got {reduction!r}.")
    return Halving(min_epochs, reduction)


def rule(pruner: Halving | None) -> str:
    """The selection rule as the tuning record states it (:data:`RULE`, plus the pruner's cut)."""
    if pruner is None:
        return RULE
    return (
        f"{RULE}; successive halving (min_epochs {pruner.min_epochs}, reduction {pruner.reduction}): at epochs "
        f"{pruner.min_epochs}*{pruner.reduction}^k a run goes on only if its best validation top-1 so far is among "
        f"the best n//{pruner.reduction} (at least the best one) of the n runs that have reached that epoch, itself "
        "included; a pruned run is no candidate"
    )


def resolve_grid(block: Mapping[str, Any], lr_grid: Sequence[float]) -> dict[str, list[float]]:
    """The block's values with ``default`` replaced by the method's ``lr_grid``; keys in :data:`TUNABLE` order."""
    return {
        key: sorted(float(v) for v in (lr_grid if block[key] == "default" else block[key]))
        for key in TUNABLE
        if key in block
    }


def combinations(grid: Mapping[str, Sequence[float]]) -> list[dict[str, float]]:
    """Every combination of the grid's values (``{"train.lr": 1e-3, "train.weight_decay": 0.05}``, ...)."""
    keys = [k for k in TUNABLE if k in grid]
    return [dict(zip(keys, combo)) for combo in itertools.product(*(grid[k] for k in keys))]


def select(scores: Mapping[tuple[float, ...], float]) -> tuple[float, ...]:
    """The combination with the highest validation score; an exact tie goes to the smaller tuple.

    Args:
        scores: combination (values in :data:`TUNABLE` order, e.g. ``(lr,)`` or ``(lr, wd)``) -> mean best
            validation top-1 over the budget seeds. Nothing else is seen here: selection cannot use the test set.

    Raises:
        ValueError: no scores, or a score that is not a finite number.

    Example:
        >>> select({(1e-3,): 80.0, (3e-4,): 82.5, (3e-3,): 82.5})
        (0.0003,)
    """
    if not scores:
        raise ValueError("nothing to select from: no tuning scores")
    bad = [k for k, v in scores.items() if not isinstance(v, int | float) or not math.isfinite(v)]
    if bad:
        raise ValueError(f"tuning score of {bad[0]} is {scores[bad[0]]!r}, not a finite number")
    return min(scores, key=lambda k: (-scores[k], k))
