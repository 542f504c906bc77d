"""The main job: a preset's sweep, then its report (runs under ``out_dir``, the report in ``out_dir/report``)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..reports.builder import Report, build_report
from ..runs.summary import RunStatus
from .executors import Executor, PointEvent
from .runner import SweepResult, plan_sweep, run_sweep
from .sweep import SweepSpec

__all__ = ["BenchResult", "run_bench"]


@dataclass
class BenchResult:
    spec: SweepSpec
    sweep: SweepResult
    report: Report | None  # None when no run finished
    seconds: float
    sweep_seconds: float
    report_seconds: float


def run_bench(
    spec: SweepSpec,
    out_dir: str | Path,
    executor: Executor,
    on_event: Callable[[PointEvent], None] | None = None,
    split_protocols: bool = False,
) -> BenchResult:
    """Run every unfinished point of ``spec`` under ``out_dir``, then write the report to ``out_dir/report``."""
    t0 = time.perf_counter()
    out_dir = Path(out_dir)
    sweep = run_sweep(spec, out_dir, executor, on_event, planned=plan_sweep(spec, out_dir))
    t1 = time.perf_counter()
    report = None
    if any(p.state is RunStatus.SUCCESS and not p.tuning for p in plan_sweep(spec, out_dir)):
        report = build_report(out_dir, out_dir / "report", split_protocols=split_protocols)
    t2 = time.perf_counter()
    return BenchResult(spec, sweep, report, t2 - t0, t1 - t0, t2 - t1)
