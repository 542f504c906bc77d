"""Executors: how sweep points get run. The unit of work is :func:`run_point` (one config dict, one run folder).

``InProcessExecutor`` runs points one after another in this process (progress bars work, tests use it).
``LocalExecutor`` runs up to N points at once in fresh worker processes, one GPU per worker when there are
GPUs (``CUDA_VISIBLE_DEVICES`` set in the worker before CUDA starts), else splitting the CPU threads.
Another executor (Ray, Slurm, ...) only has to implement :class:`Executor` on top of :func:`run_point`.
"""

from __future__ import annotations

import concurrent.futures as cf
import logging
import multiprocessing
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from ..runs import folder as rf
from ..runs.lock import RunLock, lock_path_for
from ..runs.summary import RunStatus, RunSummary
from .pruning import PruneTrial

__all__ = [
    "Executor",
    "InProcessExecutor",
    "LocalExecutor",
    "PointEvent",
    "PointJob",
    "PointResult",
    "make_executor",
    "record_point_failure",
    "run_locked",
    "run_point",
]

_logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PointJob:
    """One point to run: its name, nested run config (``out_dir`` is set by the executor) and folder.

    ``tuning``: a run of a learning-rate search (:mod:`.tuning_runs`): validated, never tested.
    ``trial``: a tuning run of a pruned search: its Optuna trial, reported to after each epoch (:mod:`.pruning`).
    """

    name: str
    config: dict[str, Any]
    run_dir: str
    values: dict[str, Any]
    tuning: bool = False
    trial: PruneTrial | None = None


@dataclass
class PointResult:
    name: str
    run_dir: str
    status: RunStatus  # SUCCESS, FAILED, INTERRUPTED or SKIPPED (finished or running in another process)
    seconds: float
    test_acc: float | None = None
    error: str | None = None
    val_acc: float | None = None  # best-checkpoint validation top-1 (None without validation)


@dataclass(frozen=True)
class PointEvent:
    """Progress: ``kind`` is "start" (result None) or "end"; ``index`` counts from 1 over ``total``."""

    kind: str
    job: PointJob
    index: int
    total: int
    result: PointResult | None = None


class Executor(Protocol):
    def run(self, jobs: Sequence[PointJob], on_event: Callable[[PointEvent], None] | None = None) -> list[PointResult]:
        """Run every job (a failed job never stops the others); results in job order."""
        ...


def record_point_failure(job: PointJob, error: str, status: RunStatus = RunStatus.FAILED) -> None:
    """Record a point that failed outside ``runs.run`` (its own, richer failed summary is kept)."""
    rf.record_failure(Path(job.run_dir), RunSummary.failure(error, job.config, status), keep_existing=True)


def run_point(job: PointJob, callbacks: Sequence[Any] = ()) -> PointResult:
    """Train one point into ``job.run_dir``; any error is recorded there and returned, never raised.

    The point's folder is locked first (:class:`~adaptertune.runs.lock.RunLock`): a point that another
    sweep process holds, or finished meanwhile, is skipped. A point whose earlier attempt stopped with a
    checkpoint resumes from it. ``KeyboardInterrupt`` still propagates (the point is recorded as interrupted).
    """
    return run_locked(job, lambda run_dir, state, lock: _run_locked_point(job, run_dir, state, callbacks, lock))


def run_locked(job: PointJob, work: Callable[[Path, Any, RunLock], PointResult | None]) -> PointResult | None:
    """``work(run_dir, state, lock)`` on the point's folder under its lock (``state``: the folder's
    :func:`~adaptertune.runs.folder.read_state` once locked); what it returns is returned. Without calling it: a
    lock that cannot be taken fails the point; one another sweep process holds, or a folder it finished meanwhile,
    skips it. The lock is released whatever ``work`` does."""
    run_dir = Path(job.run_dir)
    lock = RunLock(lock_path_for(run_dir))
    try:
        taken = lock.acquire()
    except OSError as e:
        return PointResult(job.name, job.run_dir, RunStatus.FAILED, 0.0, error=f"cannot lock the point: {e}")
    if not taken:
        owner = lock.owner() or {}
        where = f"pid {owner.get('pid', '?')} on {owner.get('host', '?')}"
        return PointResult(
            job.name, job.run_dir, RunStatus.SKIPPED, 0.0, error=f"running in another process ({where})"
        )
    try:
        state = rf.read_state(run_dir, check_lock=False)
        if state.status is RunStatus.SUCCESS:  # finished by another process after this one planned
            return PointResult(job.name, job.run_dir, RunStatus.SKIPPED, 0.0, error="finished by another process")
        return work(run_dir, state, lock)
    finally:
        lock.release()


def _run_locked_point(
    job: PointJob, run_dir: Path, state: Any, callbacks: Sequence[Any], lock: RunLock
) -> PointResult:
    from .. import runs  # looked up at call time: tests replace runs.run
    from ..config import RunConfig
    from ..errors import CheckpointError

    t0 = time.perf_counter()
    try:
        cfg = RunConfig.from_dict({**job.config, "out_dir": str(run_dir)})
        extra = {"tuning": True} if job.tuning else {}
        pruning = None
        if job.trial is not None:  # created under the lock: one attempt of a run at a time joins the study
            from .pruning import PruningCallback

            pruning = PruningCallback(job.trial)
            callbacks = [*callbacks, pruning]
        summary = None
        if state.checkpoint is not None:
            try:
                summary = runs.run(cfg, callbacks=list(callbacks), resume=True, lock=lock, **extra)
            except CheckpointError as e:  # unusable checkpoint: start the point over
                _logger.warning("point %s: cannot resume (%s); starting over", job.name, e)
        elif (run_dir / rf.CHECKPOINT_FILE).is_file():
            _logger.warning("point %s: unreadable checkpoint; starting over", job.name)
        if summary is None:
            rf.discard_attempt(run_dir)
            summary = runs.run(cfg, callbacks=list(callbacks), lock=lock, **extra)
        if pruning is not None:
            pruning.finish(summary)
        rf.write_point(run_dir, job.name, job.values)
        seconds = time.perf_counter() - t0
        val_acc = getattr(summary, "best_val_acc", None)
        return PointResult(job.name, job.run_dir, RunStatus.SUCCESS, seconds, summary.test_acc, val_acc=val_acc)
    except Exception as e:
        error = f"{type(e).__name__}: {e}"
        _logger.warning("point %s failed: %s", job.name, error)
        record_point_failure(job, error)
        return PointResult(job.name, job.run_dir, RunStatus.FAILED, time.perf_counter() - t0, error=error)
    except KeyboardInterrupt:
        record_point_failure(job, "KeyboardInterrupt: stopped by the user", RunStatus.INTERRUPTED)
        raise


class InProcessExecutor:
    """Run points one by one in this process. ``make_callbacks(job)`` gives per-run engine callbacks."""

    def __init__(self, make_callbacks: Callable[[PointJob], Sequence[Any]] | None = None) -> None:
        self.make_callbacks = make_callbacks

    def run(self, jobs: Sequence[PointJob], on_event: Callable[[PointEvent], None] | None = None) -> list[PointResult]:
        results = []
        for i, job in enumerate(jobs, 1):
            if on_event:
                on_event(PointEvent("start", job, i, len(jobs)))
            result = run_point(job, self.make_callbacks(job) if self.make_callbacks else ())
            results.append(result)
            if on_event:
                on_event(PointEvent("end", job, i, len(jobs), result))
        return results


def _worker(job: PointJob, gpu: int | None, threads: int) -> PointResult:
    # Runs in a fresh spawned process: pick the GPU before anything starts CUDA.
    if gpu is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = str(gpu)
    import torch

    from ..methods.plugins import import_env_plugins

    torch.set_num_threads(threads)
    import_env_plugins()  # the parent's --plugin modules (ADAPTERTUNE_PLUGINS): spawn starts a bare interpreter
    return run_point(job)


class LocalExecutor:
    """Run up to ``workers`` points at once, each in a fresh process (``spawn``; one process per point).

    Args:
        workers: parallel processes.
        gpus: GPU indices to spread the workers over (one per worker); empty for CPU-only.
        threads: torch threads per worker (default: CPU cores / workers).
    """

    def __init__(self, workers: int, gpus: Sequence[int] = (), threads: int | None = None) -> None:
        from ..errors import ConfigError

        if workers < 1:
            raise ConfigError(f"--workers must be >= 1, got {workers}.")
        if gpus and workers > len(gpus):
            raise ConfigError(f"--workers {workers} is more than the {len(gpus)} GPUs here (one worker per GPU).")
        self.workers = workers
        self.gpus = list(gpus)[:workers]
        self.threads = threads or max(1, (os.cpu_count() or 1) // workers)

    def run(self, jobs: Sequence[PointJob], on_event: Callable[[PointEvent], None] | None = None) -> list[PointResult]:
        results: dict[int, PointResult] = {}
        pending = list(range(len(jobs)))
        slots: list[int | None] = list(self.gpus) if self.gpus else [None] * self.workers
        ctx = multiprocessing.get_context("spawn")
        while pending:
            # A new pool per round: a worker that dies (out of memory, killed) breaks the pool; its points are
            # recorded as failed and the others go on in the next round.
            running: dict[cf.Future, tuple[int, int | None, float]] = {}
            with cf.ProcessPoolExecutor(self.workers, mp_context=ctx, max_tasks_per_child=1) as pool:
                broken = False
                while (pending and not broken) or running:
                    while pending and slots and not broken:
                        i, slot = pending[0], slots[0]
                        try:
                            fut = pool.submit(_worker, jobs[i], slot, self.threads)
                        except cf.process.BrokenProcessPool:
                            broken = True
                            break
                        pending.pop(0), slots.pop(0)
                        running[fut] = (i, slot, time.perf_counter())
                        if on_event:
                            on_event(PointEvent("start", jobs[i], len(results) + len(running), len(jobs)))
                    if not running:
                        break
                    done, _ = cf.wait(running, return_when=cf.FIRST_COMPLETED)
                    for fut in done:
                        i, slot, t0 = running.pop(fut)
                        slots.append(slot)
                        results[i] = self._result(fut, jobs[i], t0)
                        broken = broken or results[i].error is not None and "BrokenProcessPool" in results[i].error
                        if on_event:
                            on_event(PointEvent("end", jobs[i], len(results), len(jobs), results[i]))
        return [results[i] for i in range(len(jobs))]

    @staticmethod
    def _result(fut: cf.Future, job: PointJob, t0: float) -> PointResult:
        try:
            return fut.result()
        except Exception as e:  # the worker process died before it could record anything
            error = f"{type(e).__name__}: worker process died: {e}"
            record_point_failure(job, error)
            return PointResult(job.name, job.run_dir, RunStatus.FAILED, time.perf_counter() - t0, error=error)


def make_executor(
    workers: int = 1,
    gpus: Sequence[int] = (),
    make_callbacks: Callable[[PointJob], Sequence[Any]] | None = None,
    threads: int | None = None,
) -> Executor:
    """In-process for one worker, else a :class:`LocalExecutor` (one worker per GPU when there are GPUs)."""
    if workers == 1:
        return InProcessExecutor(make_callbacks)
    return LocalExecutor(workers, gpus, threads)
