"""Plan and run a sweep: each point's state on disk, its validity, and handing the rest to an executor.

A spec with a ``tune`` block runs in two phases: first the tuning runs (:mod:`.tuning`, listed before the
points in the plan), then each tuned point with the values its search selected on validation, recorded in
its ``summary.json`` (``tuning``). A tuned point whose final run would repeat a tuning run (its seed is a budget
seed and its config is that run's) is that run, tested after the choice (:mod:`.reuse`, ``tune_budget.reuse``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import AdapterTuneError, TuningError
from ..runs import folder as rf
from ..runs.summary import RunStatus, RunSummary
from .executors import Executor, PointEvent, PointJob, PointResult
from .pruning import PruneTrial
from .reuse import reuse_source, reuse_tuning_run
from .sweep import SweepPoint, SweepSpec, expand_grid
from .tuning_runs import TuneGroup, apply_choice, choose, plan_tuning

__all__ = ["PlannedPoint", "SweepResult", "plan_sweep", "run_sweep", "validate_config"]

_NOT_RUN = (RunStatus.SUCCESS, RunStatus.INVALID)  # finished (skipped), or rejected before training


@dataclass
class PlannedPoint:
    """A point with its folder's state (:func:`~adaptertune.runs.folder.read_state`), or INVALID."""

    point: SweepPoint
    run_dir: Path
    state: RunStatus
    detail: str = ""  # the error of a failed/invalid point, ``resumable (epoch N, step S)``, the lock holder
    tuning: bool = False  # a run of a learning-rate search (validated, never tested)
    group: TuneGroup | None = None  # a tuned point: the search that selects its values
    trial: PruneTrial | None = None  # a tuning run of a pruned search: its trial

    @property
    def job(self) -> PointJob:
        return PointJob(
            self.point.name, self.point.config, str(self.run_dir), self.point.values, self.tuning, self.trial
        )


@dataclass
class SweepResult:
    planned: list[PlannedPoint]
    results: list[PointResult] = field(default_factory=list)
    seconds: float = 0.0

    def count(self, status: str) -> int:
        return sum(r.status == status for r in self.results)


def validate_config(config: dict[str, Any]) -> str | None:
    """Check a point's config without training (keys, values, method, dataset and backbone names).

    Returns the error message, or None when the config is valid.
    """
    from ..backbones import resolve_backbone
    from ..config import RunConfig
    from ..data import DATASETS
    from ..resolve import resolve_config

    try:
        cfg = resolve_config(RunConfig.from_dict(config))
        DATASETS.get(cfg.data.name)
        resolve_backbone(cfg.backbone.name)  # raises with the list of names
    except AdapterTuneError as e:
        return f"{type(e).__name__}: {e}"
    return None


def _plan_point(point: SweepPoint, run_dir: Path, tuning: bool = False) -> PlannedPoint:
    folder_state = rf.read_state(run_dir)
    state, detail = folder_state.status, folder_state.describe()
    if state is not RunStatus.SUCCESS and (error := validate_config({**point.config, "out_dir": str(run_dir)})):
        state, detail = RunStatus.INVALID, error
    return PlannedPoint(point, run_dir, state, detail, tuning)


def plan_sweep(spec: SweepSpec, results_dir: str | Path) -> list[PlannedPoint]:
    """Every point of ``spec`` with its run folder under ``results_dir`` and its state; the tuning runs
    (``tuning=True``, under ``results_dir/tune``) come first.

    Raises:
        ConfigError: a tuned point has no validation split.
    """
    results_dir = Path(results_dir)
    planned = [_plan_point(point, results_dir / point.name) for point in expand_grid(spec)]
    groups = plan_tuning([p.point for p in planned if p.state is not RunStatus.INVALID], spec.tune_budget, results_dir)
    tuning, seen = [], set()
    for p in planned:
        if (group := groups.get(p.point.name)) is None:
            continue
        p.group = group
        if p.state is RunStatus.PENDING:
            p.detail = f"{', '.join(group.grid)} selected on validation in tune/{group.name}"
        if group.name not in seen:
            seen.add(group.name)
            for run in group.runs:
                tp = _plan_point(run.point, run.run_dir, tuning=True)
                tp.detail = tp.detail or "tuning run: validated, never tested"
                tp.trial = run.trial
                tuning.append(tp)
    return tuning + planned


def run_sweep(
    spec: SweepSpec,
    results_dir: str | Path,
    executor: Executor,
    on_event: Callable[[PointEvent], None] | None = None,
    planned: list[PlannedPoint] | None = None,
) -> SweepResult:
    """Run every point that is not done; invalid points are recorded as failed without running.

    A failed point never stops the others: its error is in its ``summary.json`` and in the result.
    """
    t0 = time.perf_counter()
    planned = planned if planned is not None else plan_sweep(spec, results_dir)
    results = []
    for p in planned:
        if p.state is RunStatus.INVALID:
            results.append(_fail(p, p.detail))
    tuning = [p.job for p in planned if p.tuning and p.state not in _NOT_RUN]
    results += executor.run(tuning, on_event) if tuning else []
    todo, reused, chosen, searches = [], [], {}, {}  # searches: group name -> its choice (read once per group)
    for p in planned:
        if p.tuning or p.state is RunStatus.INVALID:
            continue
        if p.group is None:
            todo += [p.job] if p.state not in _NOT_RUN else []
            continue
        try:
            if p.group.name not in searches:
                searches[p.group.name] = choose(p.group)
            values, record = searches[p.group.name]
        except TuningError as e:
            results.append(_fail(p, f"TuningError: {e}", keep_finished=True))
            continue
        job = PointJob(p.point.name, apply_choice(p.point.config, values), str(p.run_dir), p.point.values)
        chosen[p.point.name] = (p, values, record)
        if p.state is RunStatus.SUCCESS:
            continue
        if (source := reuse_source(p.group, values, job.config, p.run_dir)) is not None:
            reused.append((job, source))
        else:
            todo.append(job)
    for i, (job, source) in enumerate(reused, 1):  # the tuning run at the chosen values is this run, untested
        if on_event:
            on_event(PointEvent("start", job, i, len(reused)))
        if (result := reuse_tuning_run(job, source)) is None:
            todo.append(job)  # it would not train as its tuning run did
            continue
        results.append(result)
        if on_event:
            on_event(PointEvent("end", job, i, len(reused), result))
    results += executor.run(todo, on_event) if todo else []
    results += _record_choices(chosen.values())
    return SweepResult(planned, results, time.perf_counter() - t0)


def _fail(p: PlannedPoint, error: str, keep_finished: bool = False) -> PointResult:
    """Record a point that cannot run (a finished run in its folder is left as it is with ``keep_finished``)."""
    if not (keep_finished and p.state is RunStatus.SUCCESS):
        rf.record_failure(p.run_dir, RunSummary.failure(error, p.point.config))
    return PointResult(p.point.name, str(p.run_dir), RunStatus.FAILED, 0.0, error=error)


def _record_choices(chosen: Any) -> list[PointResult]:
    """Write each finished tuned point's search into its summary, with ``tested_from``: which of the search's
    final runs are tuning runs tested after the choice (point name -> ``tune/<group>/<run>``). A point that
    finished earlier with other values than the search selects now is a failed result (its folder is left as
    it is)."""
    failed, finished, tested = [], [], {}
    for p, values, record in chosen:
        state = rf.read_state(p.run_dir)
        if state.status is not RunStatus.SUCCESS:
            continue
        finished.append((p, values, record, state))
        if state.summary.tested_from is not None:
            tested.setdefault(p.group.name, {})[p.point.name] = state.summary.tested_from
    for p, values, record, state in finished:
        record = {**record, "tested_from": tested.get(p.group.name, {})}
        ran = {k: _config_value(state.config, k) for k in values}
        if ran != values:
            error = (
                f"TuningError: the run finished with {ran} but tuning selects {values}; remove its folder to rerun it"
            )
            failed.append(PointResult(p.point.name, str(p.run_dir), RunStatus.FAILED, 0.0, error=error))
            continue
        rf.record_tuning(p.run_dir, record)
    return failed


def _config_value(config: dict[str, Any] | None, key: str) -> Any:
    section, name = key.split(".")
    value = ((config or {}).get(section) or {}).get(name)
    return float(value) if value is not None else None
