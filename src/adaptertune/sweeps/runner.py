"""Plan and run a sweep: each point's state on disk, its validity, and handing the rest to an executor."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import AdapterTuneError
from ..runs import folder as rf
from ..runs.summary import RunStatus, RunSummary
from .executors import Executor, PointEvent, PointJob, PointResult
from .sweep import SweepPoint, SweepSpec, expand_grid

__all__ = ["PlannedPoint", "SweepResult", "plan_sweep", "run_sweep", "validate_config"]

_NOT_RUN = (RunStatus.SUCCESS, RunStatus.INVALID)  # finished (skipped), or rejected before training


@dataclass
class PlannedPoint:
    """A point with its folder's state (:func:`~adaptertune.runs.folder.read_state`), or INVALID."""

    point: SweepPoint
    run_dir: Path
    state: RunStatus
    detail: str = ""  # the error of a failed/invalid point, ``resumable (epoch N, step S)``, the lock holder

    @property
    def job(self) -> PointJob:
        return PointJob(self.point.name, self.point.config, str(self.run_dir), self.point.values)


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
    from ..runs import resolve_config

    try:
        cfg = resolve_config(RunConfig.from_dict(config))
        DATASETS.get(cfg.data.name)
        resolve_backbone(cfg.backbone.name)  # raises with the list of names
    except AdapterTuneError as e:
        return f"{type(e).__name__}: {e}"
    return None


def plan_sweep(spec: SweepSpec, results_dir: str | Path) -> list[PlannedPoint]:
    """Every point of ``spec`` with its run folder under ``results_dir`` and its state."""
    results_dir = Path(results_dir)
    planned = []
    for point in expand_grid(spec):
        run_dir = results_dir / point.name
        folder_state = rf.read_state(run_dir)
        state, detail = folder_state.status, folder_state.describe()
        if state is not RunStatus.SUCCESS and (error := validate_config({**point.config, "out_dir": str(run_dir)})):
            state, detail = RunStatus.INVALID, error
        planned.append(PlannedPoint(point, run_dir, state, detail))
    return planned


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
            rf.record_failure(p.run_dir, RunSummary.failure(p.detail, p.point.config))
            results.append(PointResult(p.point.name, str(p.run_dir), RunStatus.FAILED, 0.0, error=p.detail))
    todo = [p.job for p in planned if p.state not in _NOT_RUN]
    results += executor.run(todo, on_event) if todo else []
    return SweepResult(planned, results, time.perf_counter() - t0)
