"""A final run that is a tuning run: tested after the choice instead of trained again (``tune_budget.reuse``).

A search trains each combination at each budget seed. When a tuned point's budget is its own (same epochs,
early stopping, data), the tuning run of the chosen values at the point's seed has exactly the config of the
point's final run but its folder: training the final run would repeat it. That tuning run read no test image
while the values were chosen; testing its selected model after the choice is the protocol of a final run.

:func:`reuse_source` finds that run: finished, not pruned, and with a resolved config equal to the final run's in
every key but ``out_dir`` (``data.batched: auto`` matches the value the run decided); otherwise the final run
trains as before. :func:`reuse_tuning_run` makes the final run's folder from it under the folder's lock:
``config.yaml`` (its own ``out_dir``), ``metrics.jsonl``, the adapter file and ``skipped.txt`` copied, the test
split evaluated once (``predictions.npz``, test metrics), ``summary.json`` with the tuning run's training record
and ``tested_from``. The folder is written beside and renamed in whole: a failure leaves a failed summary only.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any

import yaml

from ..atomic import atomic_write_stream, atomic_write_text
from ..config import RunConfig
from ..config_keys import canonical_options
from ..errors import AdapterTuneError
from ..runs import folder as rf
from ..runs.summary import RunStatus, RunSummary, config_differences
from .executors import PointJob, PointResult, run_locked
from .tuning_runs import TuneGroup, TuneRun

__all__ = ["reuse_source", "reuse_tuning_run"]

_logger = logging.getLogger(__name__)


class _TrainInstead(Exception):
    """The final run would not train as the tuning run did (found only once its test split is loaded)."""


def reuse_source(group: TuneGroup, values: dict[str, float], config: dict[str, Any], run_dir: Path) -> TuneRun | None:
    """The tuning run of ``group`` that the final run (``config`` with the chosen ``values`` set, in ``run_dir``)
    would repeat, or None (reuse off, its seed is not a budget seed, the run was pruned or its config differs)."""
    if not group.reuse:
        return None
    from ..resolve import resolve_run

    try:
        cfg = RunConfig.from_dict({**config, "out_dir": str(run_dir)})
        source = next((r for r in group.runs if r.seed == cfg.train.seed and r.combo == values), None)
        if source is None:
            return None
        state = rf.read_state(source.run_dir)
        if state.status is not RunStatus.SUCCESS or state.summary.pruned_at_epoch is not None or not state.config:
            return None
        saved = canonical_options(RunConfig.from_dict(state.config).to_dict())
        resolved = resolve_run(cfg).config.to_dict()
    except AdapterTuneError as e:  # the final run trains and reports it
        _logger.info("%s: not tested from its tuning run (%s)", run_dir.name, e)
        return None
    diff = config_differences(saved, resolved, {"out_dir"})
    diff = [d for d in diff if not (d[0] == "data.batched" and d[2] == "auto")]  # decided from the splits
    if diff:
        key, ran, final = diff[0]
        why = f"`{key}` is {final!r}, not {ran!r}"
        _logger.info("%s: trained, not tested from %s: %s", run_dir.name, source.point.name, why)
        return None
    return source


def reuse_tuning_run(job: PointJob, source: TuneRun) -> PointResult | None:
    """Write the final run of ``job`` from the tuning run ``source`` (:func:`reuse_source`) under its lock.

    Returns its result (skipped when another process holds or finished the folder; failed, with the error in
    its ``summary.json``, when it cannot be made), or None when the final run must be trained after all (its
    test split cannot be transformed in batches while the tuning run's splits were).
    """
    return run_locked(job, lambda run_dir, _state, _lock: _test_locked(job, source, run_dir))


def _test_locked(job: PointJob, source: TuneRun, run_dir: Path) -> PointResult | None:
    t0 = time.perf_counter()
    try:
        summary = _write_tested(job, source)
        seconds = time.perf_counter() - t0
        return PointResult(
            job.name, job.run_dir, RunStatus.SUCCESS, seconds, summary.test_acc, val_acc=summary.best_val_acc
        )
    except _TrainInstead as e:
        _logger.info("%s: trained, not tested from %s: %s", job.name, source.point.name, e)
        return None
    except Exception as e:
        error = f"{type(e).__name__}: {e}"
        _logger.warning("point %s failed: %s", job.name, error)
        rf.record_failure(run_dir, RunSummary.failure(error, job.config))
        return PointResult(job.name, job.run_dir, RunStatus.FAILED, time.perf_counter() - t0, error=error)
    except KeyboardInterrupt:
        stopped = RunSummary.failure("KeyboardInterrupt: stopped by the user", job.config, RunStatus.INTERRUPTED)
        rf.record_failure(run_dir, stopped)
        raise
    finally:
        shutil.rmtree(rf.staging_dir(run_dir), ignore_errors=True)


def _write_tested(job: PointJob, source: TuneRun) -> RunSummary:
    from ..data import build_splits
    from ..data.loaders import ArrayLoader, make_loader
    from ..engine import cuda_backend_settings
    from ..engine.epoch import trainable_state
    from ..engine.loop import evaluate_outputs
    from ..resolve import resolve_run
    from ..runs.load import load_run
    from ..runs.predictions import predictions_of, write_predictions
    from ..runs.rank_curve import rank_curve, write_rank_curve
    from ..runs.skipped import gather_unreadable, write_skipped

    run_dir, src = Path(job.run_dir), source.run_dir
    state = rf.read_state(src)
    final_auto = RunConfig.from_dict(job.config).data.batched == "auto"
    loaded = load_run(src, device=RunConfig.from_dict(job.config).train.device)
    cfg, device = loaded.config, loaded.device
    splits = build_splits(cfg.data, loaded.data_config)
    test = splits.test
    decided = cfg.data.batched  # what the tuning run's loaders decided (config.yaml)

    def loader(batched: str, split: Any = test) -> Any:  # as runs.train makes the loaders of a single process
        return make_loader(split, cfg.train.batch_size, cfg.data.num_workers, device, batched=batched)

    test_loader = loader("auto" if final_auto else decided)
    if final_auto and isinstance(test_loader, ArrayLoader) != (decided == "on"):
        if decided == "on":  # `auto` over train, val and test decides `off`: the final run trains otherwise
            raise _TrainInstead("its test split cannot be transformed in batches; its tuning run's splits were")
        test_loader = loader("off")  # `auto` decided `off` on the tuning run's splits: every split per image
        decided = "off"
    rr = resolve_run(cfg)
    with cuda_backend_settings(device):
        metrics, outputs = evaluate_outputs(loaded.model, test_loader, device, loaded.precision)
        val_loader = (
            loader(decided, splits.val) if splits.val is not None and rr.method.eval_ranks(rr.options) else None
        )
        loaders = (None, val_loader, test_loader)  # a nested run: every rank of its grid, as runs.train evaluates
        curve = rank_curve(rr.method, rr.options, loaded.model, loaders, device, loaded.precision)
    unreadable = gather_unreadable([("test", test_loader)]).get("test", [])

    staged = rf.staging_dir(run_dir)
    shutil.rmtree(staged, ignore_errors=True)  # an attempt killed before its rename
    staged.mkdir(parents=True)
    config = {**state.config, "out_dir": str(run_dir)}
    atomic_write_text(staged / rf.CONFIG_FILE, yaml.safe_dump(config, sort_keys=False))
    _copy(src / rf.METRICS_FILE, staged / rf.METRICS_FILE)
    _copy(rf.adapter_file_path(src), staged / rf.ADAPTER_FILE)
    if (src / rf.SKIPPED_FILE).is_file():
        _copy(src / rf.SKIPPED_FILE, staged / rf.SKIPPED_FILE)
    write_skipped(staged, {"test": unreadable}, replace=("test",))
    write_predictions(staged, predictions_of(outputs, test, unreadable))
    rf.write_point(staged, job.name, job.values)
    ran = state.summary
    last_epoch = ran.stopped_epoch or cfg.train.epochs
    summary = dataclasses.replace(
        ran,
        tuning_run=False,
        test_acc=metrics["acc"],
        test_top5=metrics["top5"],
        test_acc_last=metrics["acc"] if ran.best_epoch == last_epoch else None,  # else the last model is gone
        skipped_test_images=metrics["skipped"],
        unreadable_images={**ran.unreadable_images, **({"test": len(unreadable)} if unreadable else {})},
        predictions=rf.PREDICTIONS_FILE,
        tested_from=source.point.name,
        tuning=None,
        error=None,
    )
    if curve:
        tensors = trainable_state(loaded.model)
        write_rank_curve(staged, curve, summary, rr.method, rr.options, tensors, loaded.model)
    rf.write_summary(staged, summary)
    rf.discard_attempt(run_dir)  # an earlier attempt's files (a failed summary, a checkpoint)
    os.rename(staged, run_dir)
    return summary


def _copy(src: Path, dst: Path) -> None:
    with src.open("rb") as f:
        atomic_write_stream(dst, lambda out: shutil.copyfileobj(f, out))
