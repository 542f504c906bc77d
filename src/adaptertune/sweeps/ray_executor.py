"""Ray executor: each sweep point is one Ray task (one GPU each where the cluster has GPUs).

Same unit of work as the local executors (:func:`~adaptertune.sweeps.executors.run_point`), so the
same folder layout and skip-completed rule hold, and the point locks keep two sweeps (or a retried task
and a straggler) from running a point twice. A task whose worker process dies (killed, out of memory,
node lost) is retried by Ray (``max_retries``) and the retry resumes from the point's checkpoint.
The results folder must be on storage that every node sees.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

from ..extras import require
from ..runs.summary import RunStatus
from .executors import PointEvent, PointJob, PointResult, record_point_failure, run_point

__all__ = ["RayExecutor"]

_logger = logging.getLogger(__name__)


def _import_ray() -> Any:
    return require("ray", "The Ray executor")


class RayExecutor:
    """Submit every point as a Ray task.

    Args:
        address: Ray cluster address (``auto``, ``ray://host:10001``); None starts a local Ray instance
            unless one is already initialized in this process.
        gpus_per_task: GPUs per point (None: 1 when the cluster has GPUs, else 0).
        cpus_per_task: CPUs reserved per point.
        max_retries: retries of a task whose worker died.
        point_fn: the work of one point (tests swap it to simulate a dying worker).
    """

    def __init__(
        self,
        address: str | None = None,
        gpus_per_task: float | None = None,
        cpus_per_task: float = 1,
        max_retries: int = 2,
        point_fn: Callable[[PointJob], PointResult] = run_point,
    ) -> None:
        _import_ray()  # a missing extra stops here, before any point is planned or run
        self.address, self.gpus_per_task, self.cpus_per_task = address, gpus_per_task, cpus_per_task
        self.max_retries, self.point_fn = max_retries, point_fn

    def run(self, jobs: Sequence[PointJob], on_event: Callable[[PointEvent], None] | None = None) -> list[PointResult]:
        ray = _import_ray()
        if not ray.is_initialized():
            ray.init(address=self.address, include_dashboard=False, log_to_driver=False)
        gpus = self.gpus_per_task
        if gpus is None:
            gpus = 1 if ray.cluster_resources().get("GPU", 0) > 0 else 0
        task = ray.remote(num_gpus=gpus, num_cpus=self.cpus_per_task, max_retries=self.max_retries)(self.point_fn)
        pending: dict[Any, tuple[int, float]] = {}
        for i, job in enumerate(jobs):
            pending[task.remote(job)] = (i, time.perf_counter())
            if on_event:
                on_event(PointEvent("start", job, i + 1, len(jobs)))
        results: dict[int, PointResult] = {}
        while pending:
            (ref,), _ = ray.wait(list(pending), num_returns=1)
            i, t0 = pending.pop(ref)
            try:
                results[i] = ray.get(ref)
            except Exception as e:  # the task's worker died more often than max_retries allows
                error = f"{type(e).__name__}: Ray task failed: {str(e).splitlines()[0] if str(e) else ''}"
                _logger.warning("point %s failed: %s", jobs[i].name, error)
                record_point_failure(jobs[i], error)
                results[i] = PointResult(
                    jobs[i].name, jobs[i].run_dir, RunStatus.FAILED, time.perf_counter() - t0, error=error
                )
            if on_event:
                on_event(PointEvent("end", jobs[i], len(results), len(jobs), results[i]))
        return [results[i] for i in range(len(jobs))]
