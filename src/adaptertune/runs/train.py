"""Training one run into its folder: :func:`run`, :func:`resume_run`, and the config they train with.

The folder is locked for the whole run (a second process on the same ``out_dir`` gets
:class:`~adaptertune.runs.folder.FolderLockedError`). ``overwrite`` trains the replacement beside the
earlier run and swaps it in only when it has finished, so a new run that fails leaves the old one intact.
A run stopped by the user (``KeyboardInterrupt``) records status ``interrupted`` and resumes like a killed one.
"""

from __future__ import annotations

import logging
import platform
import resource
import shutil
from pathlib import Path
from typing import Any

import torch

from ..config import RunConfig, merge_dicts
from ..config_keys import canonical_options
from ..data import build_splits, load_raw
from ..data.loaders import make_loader, split_loaders
from ..engine import Callback, fit, save_tensors
from ..engine.backward import make_mixup
from ..engine.distributed import all_true, barrier, current
from ..errors import CheckpointError, ConfigError, DataError
from ..methods import FitContext
from ..resolve import ResolvedRun, resolve_run
from ..vit import trainable_parameters
from . import folder as rf
from .adapter_file import file_metadata
from .callbacks import MetricsWriter, TensorBoardWriter
from .lock import RunLock, lock_path_for
from .predictions import predictions_of, write_predictions
from .prefix_cache import prefix_fit_inputs
from .rank_curve import rank_curve, write_rank_curve
from .skipped import SPLITS, gather_unreadable, write_skipped
from .summary import RESUME_FREE_KEYS, RunStatus, RunSummary, config_differences, make_protocol

__all__ = ["check_resumable", "resume_config", "resume_run", "run"]

_logger = logging.getLogger(__name__)


def versions() -> dict[str, str]:
    import timm
    import torchvision

    from .. import __version__

    return {
        "adaptertune": __version__,
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "timm": timm.__version__,
        "python": platform.python_version(),
    }


def resume_config(run_dir: str | Path, overrides: dict[str, Any] | None = None) -> RunConfig:
    """The config of the run in ``run_dir``; ``overrides`` (nested dict) may only change what does not
    change the numbers (data.num_workers, train.device, train.tensorboard)."""
    run_dir = Path(run_dir)
    d = merge_dicts(rf.read_config_file(run_dir, "Cannot resume"), overrides or {})
    d["out_dir"] = str(run_dir)
    return RunConfig.from_dict(d)


def resume_run(
    run_dir: str | Path, callbacks: list[Callback] = (), overrides: dict[str, Any] | None = None
) -> RunSummary:
    """Continue the unfinished run in ``run_dir`` from its last checkpoint (from scratch if it has none)."""
    return run(resume_config(run_dir, overrides), callbacks, resume=True)


def check_resumable(out_dir: Path, resolved: dict[str, Any]) -> None:
    """``out_dir`` holds an unfinished run whose config equals ``resolved`` up to RESUME_FREE_KEYS.

    ``data.batched: auto`` on either side matches ``on`` and ``off``: it is decided from the data (before the
    data is loaded, or in a run folder written before config.yaml held the decision).

    Raises:
        CheckpointError: not a run folder, or its config.yaml is corrupt.
        ConfigError: the run has finished, or a key that changes the numbers differs.
    """
    saved = rf.read_config_file(out_dir, "Cannot resume")
    state = rf.read_state(out_dir, check_lock=False)
    if state.summary is not None and state.summary.status is RunStatus.SUCCESS:
        raise ConfigError(f"Run '{out_dir}' already finished; nothing to resume (train into a new --out-dir).")
    try:
        saved = canonical_options(RunConfig.from_dict(saved).to_dict())  # `adapter:` of a run from before
    except ConfigError as e:
        raise CheckpointError(f"Cannot resume '{out_dir}': its config.yaml is corrupt ({e}).") from None
    diff = config_differences(saved, resolved, RESUME_FREE_KEYS)
    if diff := [d for d in diff if not (d[0] == "data.batched" and "auto" in d[1:])]:
        key, a, b = diff[0]
        raise ConfigError(f"Cannot resume '{out_dir}': `{key}` is {b!r} here but {a!r} in the run; resume unchanged.")


def run(
    cfg: RunConfig,
    callbacks: list[Callback] = (),
    overwrite: bool = False,
    resume: bool = False,
    lock: RunLock | None = None,
    tuning: bool = False,
) -> RunSummary:
    """Train one run and write its folder.

    Everything that can be checked (config, backbone, weights, data) is checked before the output folder
    is created, so bad input leaves no partial run behind; a run stopped by bad data before its first
    checkpoint removes the folder it created.

    Under torchrun (a process group initialized by the caller) every rank trains its shard of each global
    batch of ``cfg.train.batch_size`` and rank 0 alone locks and writes the folder.

    Args:
        overwrite: replace the run in ``cfg.out_dir``; it stays until the new run has finished.
        resume: continue the unfinished run in ``cfg.out_dir`` from its checkpoint (same config).
        lock: the folder's lock when the caller holds it already (a sweep point); else it is taken here.
        tuning: a run of a hyper-parameter search: it trains and validates, and never evaluates the test set
            (no test image is read; ``test_acc`` stays None; ``summary.tuning_run`` says so).

    Raises:
        FolderLockedError: another process is writing ``cfg.out_dir``.

    Example:
        >>> cfg = RunConfig.from_dict({"backbone": {"name": "test_vit", "pretrained": False},
        ...                            "data": {"name": "imagefolder", "root": "data/"}, "out_dir": "runs/x"})
        >>> summary = run(cfg)
    """
    rr = resolve_run(cfg)  # every default filled: what trains is what config.yaml says
    out_dir = Path(rr.config.out_dir)
    if lock is not None and lock.path != lock_path_for(out_dir):
        raise ValueError(f"the lock {lock.path} is not the lock of {out_dir}")
    resolved = rr.config.to_dict()
    _check_folder(out_dir, resolved, overwrite, resume)  # fail fast, before creating a lock file
    own, error = None, None
    if current().is_main and lock is None:
        try:
            own = rf.lock_folder(out_dir)
        except ConfigError as e:
            error = e
    if not all_true(error is None):
        raise error or ConfigError(f"Run folder '{out_dir}' is being written by another process.")
    try:
        _check_folder(out_dir, resolved, overwrite, resume)  # again, now that no one else can change it
        return _train(rr, list(callbacks), overwrite, resume, tuning)
    finally:
        if own is not None:
            own.release()


def _check_folder(out_dir: Path, resolved: dict[str, Any], overwrite: bool, resume: bool) -> None:
    if resume:
        check_resumable(out_dir, resolved)
    else:
        rf.check_target(out_dir, overwrite)
    if resolved["train"]["batch_size"] % current().world_size:
        raise ConfigError(
            f"`train.batch_size` {resolved['train']['batch_size']} must be a multiple of the "
            f"{current().world_size} processes (it is the global batch)."
        )


def _train(rr: ResolvedRun, callbacks: list, overwrite: bool, resume: bool, tuning: bool = False) -> RunSummary:
    cfg, device, out_dir, dist = rr.config, rr.device, Path(rr.config.out_dir), current()
    staged = not resume and out_dir.is_dir() and any(out_dir.iterdir())  # --overwrite of an earlier run
    work_dir = rf.staging_dir(out_dir) if staged else out_dir
    tensorboard = TensorBoardWriter(work_dir / rf.TENSORBOARD_DIR) if cfg.train.tensorboard else None  # every rank
    tensorboard = tensorboard if dist.is_main else None  # checks the package; rank 0 writes
    raw = load_raw(cfg.data)
    built, model = rr.build_model(len(raw.classes))
    splits = build_splits(cfg.data, built.data_config, raw)
    test_view = None if tuning else splits.test  # a tuning run is selected on validation: no test image read
    views = (splits.train, splits.val, test_view)
    bs = cfg.train.batch_size // dist.world_size  # the per-rank batch
    loaders, batched = split_loaders(
        views, cfg.data, bs, device, cfg.train.seed, rank=dist.rank, world_size=dist.world_size
    )
    rr = rr.with_data(splits.val is not None, batched)  # the selection rule and data.batched: before the folder
    cfg, resolved = rr.config, rr.config.to_dict()
    if resume:
        check_resumable(out_dir, resolved)  # data.batched decided: it must match the run's

    created = not out_dir.exists()
    if dist.is_main:
        rf.begin_attempt(work_dir, resolved, resume)
    barrier()
    summary = _new_summary(rr, raw, built, splits, model, tuning)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    writers = [MetricsWriter(work_dir / rf.METRICS_FILE), *([tensorboard] if tensorboard else []), *callbacks]
    read_by = [(s, lo) for s, lo in zip(SPLITS, loaders, strict=True)]  # which loaders read each split

    def view_loader(view: Any) -> Any:  # a method's own loader over a split: its skipped files count too
        lo = make_loader(view, bs, cfg.data.num_workers, device, batched=batched)
        read_by.extend((s, lo) for s, v in zip(SPLITS, views, strict=True) if v is view)
        return lo

    try:
        ctx = FitContext(
            views,
            view_loader,
            bs,
            cfg.train.seed,
            device,
            rr.precision,
        )
        inputs = rr.method.prepare_fit(model, loaders, ctx)
        if cfg.train.cache_prefix:
            frozen = rr.method.frozen_prefix(model, rr.options)
            inputs = prefix_fit_inputs(model, inputs, ctx, dist, cfg.method, frozen)
        fit_loaders = inputs.loaders if not tuning else (*inputs.loaders[:2], ())  # `fit` tests an empty loader
        result = fit(
            inputs.model,
            *fit_loaders,
            cfg.train,
            device,
            writers if dist.is_main else [],
            checkpoint_path=work_dir / rf.CHECKPOINT_FILE,
            resume=resume,
            mix=make_mixup(cfg.data.mixup, cfg.data.cutmix, cfg.train.label_smoothing, len(raw.classes)),
            selection=rr.selection,
        )
        curve = [] if tuning else rank_curve(rr.method, rr.options, inputs.model, fit_loaders, device, rr.precision)
        result = inputs.finish(result)
        unreadable = gather_unreadable(read_by)
        if dist.is_main:
            meta = file_metadata(cfg, built, raw.classes, model, summary.protocol)
            summary.unreadable_images = {s: len(items) for s, items in unreadable.items()}
            write_skipped(work_dir, unreadable)
            preds = None  # a tuning run tests nothing; under torchrun each rank tested a shard
            if not tuning and result.test_outputs is not None:
                preds = predictions_of(result.test_outputs, splits.test, unreadable.get("test", []))
            if curve:  # a nested run: every rank of its grid, before the summary says it finished
                write_rank_curve(work_dir, curve, summary, rr.method, rr.options, result.best_state, model)
            _write_results(work_dir, summary, result, meta, device, preds)
            if tensorboard is not None:
                tensorboard.write_hparams(resolved, summary.to_dict())
            if staged:
                rf.swap_in(work_dir, out_dir)
    except BaseException as e:
        if tensorboard is not None:
            tensorboard.close()
        if dist.is_main:
            _record_failure(work_dir, summary, e, remove=created and not resume, staged=staged)
        raise
    if tensorboard is not None:
        tensorboard.close()
    summary.status = RunStatus.SUCCESS
    return summary


def _new_summary(
    rr: ResolvedRun, raw: Any, built: Any, splits: Any, model: torch.nn.Module, tuning: bool
) -> RunSummary:
    """The summary of the run as it starts (status ``failed`` until it has finished)."""
    cfg = rr.config
    counts = {"train": len(raw.train), "test": len(raw.test)} | ({"val": len(raw.val)} if raw.val else {})
    params = trainable_parameters(model)
    return RunSummary(
        status=RunStatus.FAILED,
        method=cfg.method,
        backbone=cfg.backbone.name,
        dataset=cfg.data.name,
        label=rr.method.label(rr.options),
        rank=getattr(rr.options, "rank", None),
        placement=getattr(rr.options, "placement", None),
        seed=cfg.train.seed,
        subset_seed=cfg.data.subset_seed,
        trainable_params=params.trainable,
        total_params=params.total,
        num_classes=len(raw.classes),
        classes=list(raw.classes),
        split_sizes=splits.sizes(),
        weights_tag=built.weights_tag,
        weights_sha256=built.weights_sha256,
        weights_source=built.weights_source,
        protocol=make_protocol(cfg, built.data_config, raw.classes, counts, selection=rr.selection),
        selection=str(rr.selection),
        device=str(rr.device),
        precision=rr.precision,
        versions=versions(),
        tuning_run=tuning,
    )


def _peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def _write_results(
    out_dir: Path, summary: RunSummary, result: Any, meta: dict[str, Any], device: torch.device, preds: Any
) -> None:
    save_tensors(out_dir / rf.ADAPTER_FILE, result.best_state, meta)
    if preds is not None:
        write_predictions(out_dir, preds)
        summary.predictions = rf.PREDICTIONS_FILE
    if not summary.tuning_run:  # a tuning run's test loader is empty: it has no test metrics
        summary.test_acc, summary.test_top5 = result.test["acc"], result.test["top5"]
        summary.test_acc_last = result.test_last["acc"]
    summary.best_val_acc, summary.best_epoch = result.best_val_acc, result.best_epoch
    summary.stopped_epoch = result.stopped_epoch
    summary.pruned_at_epoch = result.stop_requested_epoch  # the one callback that asks for a stop: the pruner
    summary.train_seconds, summary.train_images_per_second = result.train_seconds, result.images_per_second
    summary.peak_memory_mb = _peak_memory_mb(device)
    summary.skipped_images = result.skipped_images
    summary.backend = result.backend
    summary.skipped_test_images = result.test["skipped"]
    summary.adapter_file_bytes = (out_dir / rf.ADAPTER_FILE).stat().st_size
    summary.status = RunStatus.SUCCESS
    try:
        rf.write_summary(out_dir, summary)
    except BaseException:
        summary.status = RunStatus.FAILED
        raise
    (out_dir / rf.CHECKPOINT_FILE).unlink(missing_ok=True)  # finished: the adapter file is the result


def _record_failure(work_dir: Path, summary: RunSummary, e: BaseException, remove: bool, staged: bool) -> None:
    """A replacement run (``--overwrite``) that stops is discarded: the earlier run stays as it was. Bad input
    found during training (before any checkpoint) removes the new folder; anything else writes a failed (or,
    for Ctrl-C, interrupted) summary next to the last good checkpoint, which ``--resume`` continues from."""
    if staged:
        shutil.rmtree(work_dir, ignore_errors=True)
        _logger.warning("the new run stopped (%s); the earlier run is unchanged", type(e).__name__)
        return
    if remove and isinstance(e, DataError | ConfigError) and not (work_dir / rf.CHECKPOINT_FILE).exists():
        shutil.rmtree(work_dir, ignore_errors=True)
        return
    if isinstance(e, KeyboardInterrupt):
        summary.status, summary.error = RunStatus.INTERRUPTED, "KeyboardInterrupt: stopped by the user"
    else:
        summary.status, summary.error = RunStatus.FAILED, f"{type(e).__name__}: {e}"
    rf.record_failure(work_dir, summary)
