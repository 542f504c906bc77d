"""Plan and run a sweep: each point's state on disk, its validity, and handing the rest to an executor."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from ..errors import AdapterTuneError
from .executors import Executor, PointEvent, PointJob, PointResult, write_failure
from .sweep import SweepPoint, SweepSpec, expand_grid

__all__ = ["PlannedPoint", "PointState", "SweepResult", "plan_sweep", "point_state", "run_sweep", "validate_config"]


class PointState(StrEnum):
    DONE = "done"  # summary.json says success: skipped
    FAILED = "failed"  # a previous attempt failed: runs again
    INCOMPLETE = "incomplete"  # a folder without a summary (interrupted, or running elsewhere): runs again
    PENDING = "pending"  # never started
    INVALID = "invalid"  # the config is rejected before training: recorded as failed, never run


@dataclass
class PlannedPoint:
    point: SweepPoint
    run_dir: Path
    state: PointState
    detail: str = ""  # the error of a failed/invalid point

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


def point_state(run_dir: Path) -> tuple[PointState, str]:
    """State of a run folder from its ``summary.json`` (a corrupt summary counts as incomplete)."""
    summary = run_dir / "summary.json"
    if not run_dir.is_dir():
        return PointState.PENDING, ""
    if not summary.is_file():
        return PointState.INCOMPLETE, "no summary.json"
    try:
        s = json.loads(summary.read_text())
    except (OSError, ValueError) as e:
        return PointState.INCOMPLETE, f"unreadable summary.json: {e}"
    if not isinstance(s, dict):
        return PointState.INCOMPLETE, "summary.json is not a mapping"
    if s.get("status") == "success":
        return PointState.DONE, ""
    return PointState.FAILED, str(s.get("error") or f"status {s.get('status')!r}")


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
        state, detail = point_state(run_dir)
        if state is not PointState.DONE and (error := validate_config({**point.config, "out_dir": str(run_dir)})):
            state, detail = PointState.INVALID, error
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
        if p.state is PointState.INVALID:
            write_failure(p.run_dir, p.job, p.detail, keep_existing=False)
            results.append(PointResult(p.point.name, str(p.run_dir), "failed", 0.0, error=p.detail))
    todo = [p.job for p in planned if p.state not in (PointState.DONE, PointState.INVALID)]
    results += executor.run(todo, on_event) if todo else []
    return SweepResult(planned, results, time.perf_counter() - t0)
