"""Successive halving of a sweep's tuning runs with Optuna (the ``tune`` extra): the live pruner and its replay.

A tuning group with ``tune_budget.pruner`` keeps one Optuna study (direction maximize, Optuna's
``SuccessiveHalvingPruner(min_resource=min_epochs, reduction_factor=reduction)``) in
``<results>/tune/<group>/optuna.journal``: a journal file, so the worker processes of a ``LocalExecutor``
share it and a re-run of the sweep goes on with it. Each tuning run is one trial with fixed parameters (its
combination and seed) and the user attribute ``run`` (its folder name in the group). After each epoch the run
reports its best validation top-1 so far at step = epoch (the score it would have if it stopped there); when the
pruner says so it stops after that epoch, like early stopping (:class:`PruningCallback`; the best-validation
model so far is kept, and ``summary.json`` says ``pruned_at_epoch``). A finished run tells the study its best
validation top-1; a pruned one is told PRUNED. Runs that ran one after another (``InProcessExecutor``) are
judged in plan order, so the search is deterministic; concurrent runs are judged in the order they reach each
rung (asynchronous successive halving).

:func:`replay` feeds the validation curves of a full-grid search through the same pruner in that order, which
is what the pruned search would have trained and picked (training is deterministic: a pruned run is a prefix of
the unpruned one).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..engine.stopping import patience_step
from ..errors import TuningError
from ..extras import require
from .tuning_spec import Halving, select

__all__ = ["JOURNAL_FILE", "PruneTrial", "PruningCallback", "Replay", "ReplayRun", "replay", "study_name"]

_logger = logging.getLogger(__name__)

JOURNAL_FILE = "optuna.journal"  # in <results>/tune/<group>/
_FEATURE = "`tune_budget.pruner`"


@dataclass(frozen=True)
class PruneTrial:
    """What a tuning run needs to join its search's study (picklable: it travels in a ``PointJob``)."""

    journal: str  # the group's optuna.journal
    study: str  # the study's name in it (:func:`study_name`)
    run: str  # the run's folder name in its group: the trial's user attribute ``run``
    params: dict[str, float | int]  # the combination and the seed: the trial's fixed parameters
    pruner: Halving


def study_name(epochs: int, early_stop: int | None, pruner: Halving) -> str:
    """One study per budget and pruner: runs of another budget in the same journal never compete."""
    return f"epochs={epochs},early_stop={early_stop},halving={pruner.min_epochs}-{pruner.reduction}"


def _optuna() -> Any:
    optuna = require("optuna", _FEATURE)
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # no line per created study / finished trial
    return optuna


def _create_study(optuna: Any, pruner: Halving, storage: Any = None, name: str | None = None) -> Any:
    return optuna.create_study(
        storage=storage,
        study_name=name,
        direction="maximize",
        pruner=optuna.pruners.SuccessiveHalvingPruner(
            min_resource=pruner.min_epochs, reduction_factor=pruner.reduction
        ),
        sampler=optuna.samplers.RandomSampler(seed=0),  # unused: every parameter is fixed
        load_if_exists=True,
    )


class PruningCallback:
    """The engine callback of one tuning run: reports each epoch to its trial and asks to stop when pruned.

    Made by the executor (:func:`~adaptertune.sweeps.executors.run_point`) while it holds the run's lock. A run
    that resumes (or restarts after a failure) continues the trial of its earlier attempt (the RUNNING trial
    with its ``run`` attribute); an epoch that attempt had reported already gets the decision recorded then
    (user attribute ``pruned_at_epoch``), so a resumed search decides exactly as an uninterrupted one.
    """

    def __init__(self, spec: PruneTrial) -> None:
        optuna = _optuna()
        from optuna.storages import JournalStorage
        from optuna.storages.journal import JournalFileBackend

        Path(spec.journal).parent.mkdir(parents=True, exist_ok=True)
        storage = JournalStorage(JournalFileBackend(spec.journal))
        self.spec, self.optuna = spec, optuna
        self.study = _create_study(optuna, spec.pruner, storage, spec.study)
        running = self.study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
        earlier = [t for t in running if t.user_attrs.get("run") == spec.run]
        if earlier:
            self.trial = optuna.trial.Trial(self.study, earlier[0]._trial_id)  # Optuna has no public resume
        else:
            dists = optuna.distributions
            fixed = {
                k: dists.IntDistribution(v, v) if isinstance(v, int) else dists.FloatDistribution(v, v)
                for k, v in spec.params.items()
            }
            self.trial = self.study.ask(fixed)
            self.trial.set_user_attr("run", spec.run)

    def _frozen(self) -> Any:
        return next(t for t in self.study.get_trials(deepcopy=False) if t.number == self.trial.number)

    def on_train_start(self, total_steps: int, steps_per_epoch: int, start_step: int) -> None:
        pass

    def on_step(self, step: int, loss: float, lr: float) -> None:
        pass

    def on_epoch_end(self, metrics: dict[str, Any]) -> bool:
        epoch, acc = metrics["epoch"], metrics.get("val_acc")
        if acc is None:
            raise TuningError(f"tuning run '{self.spec.run}' has no validation accuracy at epoch {epoch} to prune on")
        frozen = self._frozen()
        if epoch in frozen.intermediate_values:  # reported by an earlier attempt that stopped before its checkpoint
            return frozen.user_attrs.get("pruned_at_epoch") == epoch
        best = max([acc, *(v for s, v in frozen.intermediate_values.items() if s < epoch)])
        self.trial.report(best, epoch)
        if self.trial.should_prune():
            self.trial.set_user_attr("pruned_at_epoch", epoch)
            return True
        return False

    def finish(self, summary: Any) -> None:
        """Tell the study how the run ended: PRUNED (``summary.pruned_at_epoch``) or its best validation top-1."""
        if summary.pruned_at_epoch is not None:
            self.study.tell(self.trial, state=self.optuna.trial.TrialState.PRUNED)
        else:
            self.study.tell(self.trial, summary.best_val_acc)


@dataclass(frozen=True)
class ReplayRun:
    """One combination as the pruned search trains it."""

    epochs: int  # epochs trained
    pruned_at_epoch: int | None  # None: trained out (all epochs, or stopped by patience)
    best_val: float  # best validation top-1 over those epochs


@dataclass(frozen=True)
class Replay:
    """What a pruned search trains and picks, next to the full grid it was replayed from."""

    runs: dict[tuple[float, ...], ReplayRun]
    chosen: tuple[float, ...]  # the pick among the runs not pruned
    epochs: int  # epochs the pruned search trains, all runs together
    full_chosen: tuple[float, ...]  # the full grid's pick (same patience, nothing pruned)
    full_epochs: int  # epochs the full grid trains

    @property
    def same_pick(self) -> bool:
        return self.chosen == self.full_chosen


def replay(
    curves: Mapping[tuple[float, ...], Sequence[float]],
    order: Sequence[tuple[float, ...]],
    min_epochs: int,
    reduction: int,
    patience: int | None = None,
    min_delta: float = 0.0,
) -> Replay:
    """Feed full validation curves through the live pruner, trial by trial in ``order``.

    Args:
        curves: combination (values in ``TUNABLE`` order, as :func:`~adaptertune.sweeps.tuning_spec.select`
            takes them) -> validation top-1 after each epoch of an unpruned run (``metrics.jsonl``'s ``val_acc``).
        order: the combinations in the order their runs were judged (a sweep's plan order).
        patience, min_delta: the tuning runs' early stopping (``train.early_stop``, ``early_stop_min_delta``).

    Raises:
        ValueError: ``order`` is not every combination once, or a curve is empty.
    """
    if sorted(order) != sorted(curves) or len(set(order)) != len(order):
        raise ValueError(f"order {list(order)} must list every combination of the curves once: {list(curves)}")
    if empty := [k for k in order if not curves[k]]:
        raise ValueError(f"the validation curve of {empty[0]} is empty")
    optuna = _optuna()
    study = _create_study(optuna, Halving(min_epochs, reduction))
    runs, full = {}, {}
    for key in order:
        trial = study.ask()
        best, stale, pruned, stopped = -math.inf, 0, None, None
        for epoch, acc in enumerate(curves[key], 1):
            es = patience_step(acc, best, stale, patience, min_delta)
            best, stale = max(best, acc), es.stale
            if pruned is None:
                trial.report(best, epoch)
                pruned = epoch if trial.should_prune() else None
                runs[key] = ReplayRun(epoch, pruned, best)
            if es.stop:
                stopped = epoch
                break
        full[key] = ReplayRun(stopped or len(curves[key]), None, best)
        if pruned is None:
            study.tell(trial, runs[key].best_val)
        else:
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
    candidates = {k: r.best_val for k, r in runs.items() if r.pruned_at_epoch is None}
    return Replay(
        runs=runs,
        chosen=select(candidates),
        epochs=sum(r.epochs for r in runs.values()),
        full_chosen=select({k: r.best_val for k, r in full.items()}),
        full_epochs=sum(r.epochs for r in full.values()),
    )
