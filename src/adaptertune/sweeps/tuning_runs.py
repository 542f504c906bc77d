"""The tuning runs of a sweep: which runs a ``tune`` block needs, where they live, and what they select.

Points that differ only in their seed share one search (a *group*): one run per combination of tuned values
and budget seed, in ``<results>/tune/<group>/<run>`` (``tune/method=adapter,rank=16/seed=0,epochs=2,lr=0.001``).
Those folders are ordinary run folders, so a re-run of the sweep skips the finished ones and resumes the rest.
A tuning run is validated and never tested (:func:`adaptertune.runs.run` with ``tuning=True``); the choice
(:func:`choose`) reads only their best validation accuracies, through :mod:`adaptertune.runs.folder`. With
``tune_budget.pruner`` the group's runs are trials of one Optuna study (:mod:`.pruning`, ``optuna.journal`` in
the group's folder) and a run the pruner stopped (``pruned_at_epoch``) is no candidate.
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
from .pruning import JOURNAL_FILE, PruneTrial, Replay, replay, study_name
from .sweep import SweepPoint, point_name
from .tuning_spec import Halving, TuneBudget, combinations, parse_budget, resolve_grid, rule, select

__all__ = ["TUNE_DIR", "TuneGroup", "TuneRun", "apply_choice", "choose", "plan_tuning", "replay_group"]

TUNE_DIR = "tune"  # under the sweep's results folder


@dataclass(frozen=True)
class TuneRun:
    """One tuning run: a sweep point (config at the budget) whose values are ``combo`` at ``seed``."""

    point: SweepPoint
    run_dir: Path
    combo: dict[str, float]
    seed: int
    trial: PruneTrial | None = None  # its trial in the group's study (a pruned search)


@dataclass
class TuneGroup:
    """One search, shared by the points that differ only in their seed."""

    name: str  # folder under <results>/tune
    grid: dict[str, list[float]]
    epochs: int
    seeds: tuple[int, ...]
    runs: list[TuneRun] = field(default_factory=list)
    early_stop: int | None = None  # the tuning runs' patience (None: they train every epoch of the budget)
    pruner: Halving | None = None  # None: the full grid
    reuse: bool = True  # a final run identical to a tuning run is that run tested (:mod:`.reuse`)


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
            epochs, seeds = parsed.epochs or cfg.train.epochs, parsed.seeds or (cfg.train.seed,)
            early_stop = parsed.early_stop or cfg.train.early_stop
            group = TuneGroup(
                name, grid, epochs, seeds, early_stop=early_stop, pruner=parsed.pruner, reuse=parsed.reuse
            )
            patience = {"train.early_stop": parsed.early_stop} if parsed.early_stop else {}  # else the point's
            for combo in combinations(grid):
                for seed in group.seeds:
                    values = {"train.seed": seed, "train.epochs": group.epochs, **patience, **combo}
                    config = apply_choice(point.config, values)
                    run_name = point_name(values)
                    full = {**_group_values(point), **values}
                    sweep_point = SweepPoint(f"{TUNE_DIR}/{name}/{run_name}", full, config)
                    run_dir = results_dir / TUNE_DIR / name / run_name
                    trial = _trial(group, results_dir, run_name, {**combo, "train.seed": seed})
                    group.runs.append(TuneRun(sweep_point, run_dir, combo, seed, trial))
            groups[name] = group
        of_point[point.name] = groups[name]
    return of_point


def _trial(group: TuneGroup, results_dir: Path, run_name: str, params: dict[str, Any]) -> PruneTrial | None:
    if group.pruner is None:
        return None
    journal = str(results_dir / TUNE_DIR / group.name / JOURNAL_FILE)
    return PruneTrial(
        journal, study_name(group.epochs, group.early_stop, group.pruner), run_name, params, group.pruner
    )


def choose(group: TuneGroup) -> tuple[dict[str, float], dict[str, Any]]:
    """The selected values of ``group`` and the record of the search for ``summary.json``.

    Reads each tuning run's best validation accuracy (nothing else: tuning runs have no test metrics) and
    whether the pruner stopped it: a combination with a pruned run is no candidate.

    Raises:
        TuningError: a tuning run has not finished, has no validation accuracy, or was pruned by a search
            that has no pruner now.
    """
    per_combo: dict[tuple[float, ...], dict[int, float]] = {}
    pruned: set[tuple[float, ...]] = set()
    trained = []
    for run in group.runs:
        state = rf.read_state(run.run_dir)
        if state.status is not RunStatus.SUCCESS:
            detail = f": {state.describe()}" if state.describe() else ""
            raise TuningError(f"tuning run '{run.point.name}' is {state.status.value}{detail}")
        summary = state.summary
        if summary.best_val_acc is None:
            raise TuningError(f"tuning run '{run.point.name}' has no validation accuracy")
        if summary.pruned_at_epoch is not None and group.pruner is None:
            raise TuningError(
                f"tuning run '{run.point.name}' was pruned at epoch {summary.pruned_at_epoch} by an earlier search "
                "with a pruner, and this search has none; remove its folder to train it out"
            )
        combo = tuple(run.combo.values())
        per_combo.setdefault(combo, {})[run.seed] = float(summary.best_val_acc)
        if summary.pruned_at_epoch is not None:
            pruned.add(combo)
        ended = [e for e in (summary.pruned_at_epoch, summary.stopped_epoch) if e is not None]
        trained.append(
            {
                "run": run.run_dir.name,
                "epochs": min(ended, default=group.epochs),
                "pruned_at_epoch": summary.pruned_at_epoch,
                "train_seconds": summary.train_seconds,
            }
        )
    scores = {combo: sum(accs.values()) / len(accs) for combo, accs in per_combo.items()}
    candidates = {combo: score for combo, score in scores.items() if combo not in pruned}
    if not candidates:
        raise TuningError(f"every tuning run of tune/{group.name} was pruned; nothing to select from")
    chosen_tuple = select(candidates)
    keys = list(group.grid)
    chosen = dict(zip(keys, chosen_tuple))
    budget = {"epochs": group.epochs, "seeds": list(group.seeds)}
    record = {
        "keys": keys,
        "grid": {k: list(v) for k, v in group.grid.items()},
        "val_acc": [
            {"values": dict(zip(keys, combo)), "mean": scores[combo], "per_seed": [accs[s] for s in group.seeds]}
            for combo, accs in per_combo.items()
        ],
        "chosen": chosen,
        "budget": budget | ({"early_stop": group.early_stop} if group.early_stop is not None else {}),
        "rule": rule(group.pruner),
        "runs": f"{TUNE_DIR}/{group.name}",
        "pruner": group.pruner.to_dict() if group.pruner else None,
        "reuse": group.reuse,
        "trained": trained,
        "spent": {
            "epochs": sum(t["epochs"] for t in trained),
            "train_seconds": sum(t["train_seconds"] or 0.0 for t in trained),
        },
    }
    return chosen, record


def replay_group(group: TuneGroup, pruner: Halving) -> Replay:
    """What ``pruner`` would have trained and picked in ``group``, a finished full-grid search (one budget seed),
    replayed from its runs' validation curves (``metrics.jsonl``) in plan order (:func:`.pruning.replay`).

    Raises:
        TuningError: more than one budget seed, or a run that has not finished or was itself pruned.
    """
    if len(group.seeds) != 1:
        raise TuningError(f"tune/{group.name} has {len(group.seeds)} budget seeds; replay takes one (a trial per run)")
    curves = {}
    for run in group.runs:
        state = rf.read_state(run.run_dir)
        if state.status is not RunStatus.SUCCESS or state.summary.pruned_at_epoch is not None:
            what = "was pruned" if state.status is RunStatus.SUCCESS else f"is {state.status.value}"
            raise TuningError(f"tuning run '{run.point.name}' {what}; replay needs the full grid, trained out")
        curves[tuple(run.combo.values())] = [m["val_acc"] for m in rf.read_jsonl(run.run_dir / rf.METRICS_FILE)]
    cfg = RunConfig.from_dict(group.runs[0].point.config).train
    return replay(
        curves, list(curves), pruner.min_epochs, pruner.reduction, group.early_stop, cfg.early_stop_min_delta
    )


def apply_choice(config: dict[str, Any], chosen: dict[str, Any]) -> dict[str, Any]:
    """A copy of a point's config with the selected (or a tuning run's) values set."""
    config = copy.deepcopy(config)
    for key, value in chosen.items():
        set_dotted(config, key, value)
    return config
