"""The tuning runs of a sweep: which runs a ``tune`` block needs, where they live, and what they select.

Points that differ only in their seed share one search (a *group*): one run per combination of tuned values
and budget seed, in ``<results>/tune/<group>/<run>`` (``tune/method=adapter,rank=16/seed=0,epochs=2,lr=0.001``).
Those folders are ordinary run folders, so a re-run of the sweep skips the finished ones and resumes the rest.
A tuning run is validated and never tested (:func:`adaptertune.runs.run` with ``tuning=True``); the choice
(:func:`choose`) reads only their best validation accuracies, through :mod:`adaptertune.runs.folder`.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import RunConfig
from ..config_keys import set_dotted
from ..errors import ConfigError, TuningError
from ..methods import METHODS
from ..runs import folder as rf
from ..runs.summary import RunStatus
from .sweep import SweepPoint, point_name
from .tuning_spec import RULE, TuneBudget, combinations, parse_budget, resolve_grid, select

__all__ = ["TUNE_DIR", "TuneGroup", "TuneRun", "apply_choice", "choose", "plan_tuning"]

TUNE_DIR = "tune"  # under the sweep's results folder


@dataclass(frozen=True)
class TuneRun:
    """One tuning run: a sweep point (config at the budget) whose values are ``combo`` at ``seed``."""

    point: SweepPoint
    run_dir: Path
    combo: dict[str, float]
    seed: int


@dataclass
class TuneGroup:
    """One search, shared by the points that differ only in their seed."""

    name: str  # folder under <results>/tune
    grid: dict[str, list[float]]
    epochs: int
    seeds: tuple[int, ...]
    runs: list[TuneRun] = field(default_factory=list)


def _group_values(point: SweepPoint) -> dict[str, Any]:
    return {k: v for k, v in point.values.items() if k != "train.seed"}


def plan_tuning(points: list[SweepPoint], budget: dict[str, Any] | None, results_dir: Path) -> dict[str, TuneGroup]:
    """The search of every tuned point: point name -> its group (points without ``tune`` are left out).

    Args:
        points: valid sweep points (their configs pass :func:`~adaptertune.sweeps.runner.validate_config`).
        budget: the spec's ``tune_budget``.

    Raises:
        ConfigError: a tuned point has no validation split (``data.val_fraction`` 0 and no ``data.val_subset``).
    """
    parsed: TuneBudget = parse_budget(budget)
    groups: dict[str, TuneGroup] = {}
    of_point: dict[str, TuneGroup] = {}
    for point in points:
        if not point.tune:
            continue
        cfg = RunConfig.from_dict(point.config)
        if cfg.data.val_fraction == 0 and cfg.data.val_subset is None:
            raise ConfigError(
                f"Point '{point.name}' tunes {', '.join(point.tune)} on validation but has none "
                "(data.val_fraction 0, no data.val_subset); set data.val_subset or data.val_fraction > 0."
            )
        name = point_name(_group_values(point)) or "all"
        if name not in groups:
            grid = resolve_grid(point.tune, METHODS.get(cfg.method).lr_grid)
            group = TuneGroup(name, grid, parsed.epochs or cfg.train.epochs, parsed.seeds or (cfg.train.seed,))
            for combo in combinations(grid):
                for seed in group.seeds:
                    values = {"train.seed": seed, "train.epochs": group.epochs, **combo}
                    config = apply_choice(point.config, values)
                    run_name = point_name(values)
                    full = {**_group_values(point), **values}
                    sweep_point = SweepPoint(f"{TUNE_DIR}/{name}/{run_name}", full, config)
                    group.runs.append(TuneRun(sweep_point, results_dir / TUNE_DIR / name / run_name, combo, seed))
            groups[name] = group
        of_point[point.name] = groups[name]
    return of_point


def choose(group: TuneGroup) -> tuple[dict[str, float], dict[str, Any]]:
    """The selected values of ``group`` and the record of the search for ``summary.json``.

    Reads each tuning run's best validation accuracy (nothing else: tuning runs have no test metrics).

    Raises:
        TuningError: a tuning run has not finished, or has no validation accuracy.
    """
    per_combo: dict[tuple[float, ...], dict[int, float]] = {}
    for run in group.runs:
        state = rf.read_state(run.run_dir)
        if state.status is not RunStatus.SUCCESS:
            detail = f": {state.describe()}" if state.describe() else ""
            raise TuningError(f"tuning run '{run.point.name}' is {state.status.value}{detail}")
        if state.summary.best_val_acc is None:
            raise TuningError(f"tuning run '{run.point.name}' has no validation accuracy")
        per_combo.setdefault(tuple(run.combo.values()), {})[run.seed] = float(state.summary.best_val_acc)
    scores = {combo: sum(accs.values()) / len(accs) for combo, accs in per_combo.items()}
    chosen_tuple = select(scores)
    keys = list(group.grid)
    chosen = dict(zip(keys, chosen_tuple))
    record = {
        "keys": keys,
        "grid": {k: list(v) for k, v in group.grid.items()},
        "val_acc": [
            {"values": dict(zip(keys, combo)), "mean": scores[combo], "per_seed": [accs[s] for s in group.seeds]}
            for combo, accs in per_combo.items()
        ],
        "chosen": chosen,
        "budget": {"epochs": group.epochs, "seeds": list(group.seeds)},
        "rule": RULE,
        "runs": f"{TUNE_DIR}/{group.name}",
    }
    return chosen, record


def apply_choice(config: dict[str, Any], chosen: dict[str, Any]) -> dict[str, Any]:
    """A copy of a point's config with the selected (or a tuning run's) values set."""
    config = copy.deepcopy(config)
    for key, value in chosen.items():
        set_dotted(config, key, value)
    return config
