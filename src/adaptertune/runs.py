"""One training run, end to end, and its directory contract.

A run directory holds ``config.yaml`` (fully resolved), ``metrics.jsonl`` (one line per epoch),
``summary.json`` (a :class:`RunSummary`), ``adapter.safetensors`` (the trained tensors of the
best-validation model, with metadata) and, while training, ``checkpoint.safetensors`` (the resume state;
``run(cfg, resume=True)`` / ``adaptertune train --resume DIR`` continue from it). Every file is written
atomically (temporary file, fsync, rename). ``eval`` and ``predict`` rebuild the model from the backbone and
that file, and check that the backbone weights hash to the recorded value.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import platform
import resource
import shutil
import time
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn

from .adapter_files import check_adapter_file
from .adapters import adapted_blocks, backbone_width
from .backbones import create_backbone
from .config import RunConfig
from .data import build_splits, build_transforms, collate_skip, load_raw
from .data.base import SplitView
from .engine import (
    Callback,
    atomic_write_text,
    evaluate,
    fit,
    load_tensors,
    read_jsonl,
    resolve_device,
    resolve_precision,
    save_tensors,
)
from .engine.checkpoint import load_trained_tensors
from .engine.distributed import DistInfo, barrier, current
from .engine.sampling import ResumableSampler, SeededAugmentView, ShardedEvalSampler
from .errors import CheckpointError, ConfigError, DataError, OutputError
from .methods import METHODS, FitContext, build_method, resolve_adapter_config
from .resume import check_resumable, resume_config

__all__ = [
    "LoadedRun",
    "RunStatus",
    "RunSummary",
    "evaluate_run",
    "load_run",
    "make_loader",
    "predict",
    "resolve_config",
    "resume_config",
    "resume_run",
    "run",
]

ADAPTER_FILE = "adapter.safetensors"
CHECKPOINT_FILE = "checkpoint.safetensors"
_logger = logging.getLogger(__name__)


class RunStatus(StrEnum):
    SUCCESS = "success"
    FAILED = "failed"


@dataclass
class RunSummary:
    status: RunStatus
    method: str
    backbone: str
    dataset: str
    rank: int | None
    placement: str | list[int] | None
    seed: int
    test_acc: float | None = None  # top-1 %, best-val checkpoint
    test_top5: float | None = None
    test_acc_last: float | None = None  # top-1 %, last epoch (reported, never used for selection)
    best_val_acc: float | None = None
    best_epoch: int | None = None
    selection: str = "best_val_top1"
    trainable_params: int = 0
    total_params: int = 0
    adapter_file_bytes: int | None = None
    train_seconds: float | None = None
    train_images_per_second: float | None = None
    peak_memory_mb: float | None = None
    skipped_images: int = 0  # corrupt training images skipped (all epochs)
    skipped_test_images: int = 0  # corrupt test images skipped (not in test_acc's denominator)
    num_classes: int = 0
    classes: list[str] = field(default_factory=list)
    split_sizes: dict[str, int] = field(default_factory=dict)
    weights_tag: str = ""
    weights_sha256: str = ""
    protocol: dict[str, Any] = field(default_factory=dict)
    device: str = ""
    precision: str = ""
    versions: dict[str, str] = field(default_factory=dict)
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["status"] = self.status.value
        return d


def versions() -> dict[str, str]:
    import timm
    import torchvision

    from . import __version__

    return {
        "adaptertune": __version__,
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "timm": timm.__version__,
        "python": platform.python_version(),
    }


def resolve_config(cfg: RunConfig) -> RunConfig:
    """Fill the method's defaults (lr, weight decay, adapter options) and check the method's options."""
    info = METHODS.get(cfg.method)
    d = cfg.to_dict()
    d["adapter"] = resolve_adapter_config(cfg.method, cfg.adapter)  # the method's options dataclass (or None)
    for key in ("lr", "weight_decay"):
        if d["train"][key] is None:
            d["train"][key] = info.defaults[key]
    if info.cached_features:  # features are computed once: no augmentation by definition of the method
        d["data"]["augment"] = False
    if d["train"]["warmup_epochs"] is None:
        d["train"]["warmup_epochs"] = min(5.0, 0.1 * d["train"]["epochs"])
    return RunConfig.from_dict(d)


def make_loader(
    view: SplitView,
    batch_size: int,
    num_workers: int,
    device: torch.device,
    shuffle: bool = False,
    seed: int = 0,
    dist: DistInfo | None = None,
) -> torch.utils.data.DataLoader:
    """DataLoader with a seeded, resumable order.

    ``shuffle``: the order of epoch e comes from (seed, e) and the augmentation of item i from
    (seed, e, i), whatever the worker count (:class:`ResumableSampler`). Under torchrun each rank reads its
    shard: ``batch_size`` is then the per-rank batch. The loader's own generator keeps iterator creation
    off the global RNG.
    """
    dist = dist or DistInfo()
    if shuffle:
        dataset = SeededAugmentView(view, seed)
        sampler = ResumableSampler(len(view), seed, batch_size, dist.rank, dist.world_size)
    else:
        dataset, sampler = view, ShardedEvalSampler(len(view), dist.rank, dist.world_size) if dist.enabled else None
    return torch.utils.data.DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        generator=torch.Generator().manual_seed(seed),
        num_workers=num_workers,
        persistent_workers=num_workers > 0,
        pin_memory=device.type == "cuda",
        collate_fn=collate_skip,
    )


def _peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


class _MetricsWriter:
    """Rewrites metrics.jsonl atomically each epoch; a resumed run replaces the lines of redone epochs."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.records: list[dict[str, Any]] = []

    def on_train_start(self, total_steps: int, steps_per_epoch: int, start_step: int) -> None:
        self.records = read_jsonl(self.path)

    def on_step(self, step: int, loss: float, lr: float) -> None:
        pass

    def on_epoch_end(self, metrics: dict[str, Any]) -> None:
        self.records = [r for r in self.records if r.get("epoch", 0) < metrics["epoch"]] + [metrics]
        atomic_write_text(self.path, "".join(json.dumps(r) + "\n" for r in self.records))


class _TensorBoardWriter:
    """Step loss and learning rate, and every numeric epoch metric, as TensorBoard events.

    ``purge_step`` makes a resumed run drop the events an interrupted attempt wrote past its checkpoint.
    """

    def __init__(self, log_dir: Path) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise ImportError(
                "train.tensorboard needs the tensorboard package: pip install 'adaptertune[tensorboard]'"
            ) from None
        self.log_dir, self.make, self.writer = log_dir, SummaryWriter, None

    def on_train_start(self, total_steps: int, steps_per_epoch: int, start_step: int) -> None:
        self.steps_per_epoch = steps_per_epoch
        # events are logged at 1-based step numbers: whatever an earlier attempt wrote past the checkpoint's
        # step (all of it when starting from step 0) is dropped
        self.writer = self.make(str(self.log_dir), purge_step=start_step + 1)

    def on_step(self, step: int, loss: float, lr: float) -> None:
        self.writer.add_scalar("train/loss_step", loss, step + 1)
        self.writer.add_scalar("train/lr", lr, step + 1)

    def on_epoch_end(self, metrics: dict[str, Any]) -> None:
        step = metrics.get("step", metrics["epoch"] * self.steps_per_epoch)
        for key, value in metrics.items():
            if key not in ("epoch", "step", "lr") and isinstance(value, (int, float)):
                self.writer.add_scalar(f"epoch/{key}", value, step)
        self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def _prepare_out_dir(out_dir: Path, overwrite: bool) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(f"Output path '{out_dir}' exists and is not a folder; pick another --out-dir.")
    if out_dir.is_dir() and any(out_dir.iterdir()):
        if not overwrite:
            raise ConfigError(f"Output folder '{out_dir}' is not empty; pick another --out-dir or pass --overwrite.")
        if not (out_dir / "config.yaml").is_file():
            raise ConfigError(f"Output folder '{out_dir}' is not a run folder; --overwrite only replaces runs.")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"Cannot create output folder '{out_dir}': {e.strerror}.") from None


def resume_run(
    run_dir: str | Path, callbacks: list[Callback] = (), overrides: dict[str, Any] | None = None
) -> RunSummary:
    """Continue the interrupted run in ``run_dir`` from its last checkpoint (from scratch if it has none)."""
    return run(resume_config(run_dir, overrides), callbacks, resume=True)


def run(cfg: RunConfig, callbacks: list[Callback] = (), overwrite: bool = False, resume: bool = False) -> RunSummary:
    """Train one run and write its directory.

    Everything that can be checked (config, backbone, weights, data) is checked before the output folder
    is created, so bad input leaves no partial run behind; a run stopped by bad data before its first
    checkpoint removes the folder it created.

    Under torchrun (a process group initialized by the caller) every rank trains its shard of each global
    batch of ``cfg.train.batch_size`` and rank 0 alone writes files.

    Args:
        resume: continue the unfinished run in ``cfg.out_dir`` from its checkpoint (same config).

    Example:
        >>> cfg = RunConfig.from_dict({"backbone": {"name": "test_vit", "pretrained": False},
        ...                            "data": {"name": "imagefolder", "root": "data/"}, "out_dir": "runs/x"})
        >>> summary = run(cfg)
    """
    cfg = resolve_config(cfg)
    out_dir = Path(cfg.out_dir)
    dist = current()
    if resume:
        check_resumable(out_dir, cfg)
    elif out_dir.is_dir() and any(out_dir.iterdir()) and not overwrite:
        _prepare_out_dir(out_dir, overwrite)  # fail fast, before the expensive part
    if cfg.train.batch_size % dist.world_size:
        raise ConfigError(
            f"`train.batch_size` {cfg.train.batch_size} must be a multiple of the {dist.world_size} processes "
            "(it is the global batch)."
        )
    device = resolve_device(cfg.train.device)
    if dist.enabled and device.type == "cuda":
        device = torch.device("cuda", torch.cuda.current_device())  # set per rank by init_distributed
    precision = resolve_precision(cfg.train.precision, device)
    tensorboard = _TensorBoardWriter(out_dir / "tensorboard") if cfg.train.tensorboard else None  # every rank
    tensorboard = tensorboard if dist.is_main else None  # checks the package; rank 0 writes
    raw = load_raw(cfg.data)
    built = create_backbone(cfg.backbone, num_classes=len(raw.classes), seed=cfg.train.seed)
    splits = build_splits(cfg.data, built.data_config, raw)
    torch.manual_seed(cfg.train.seed)  # adapter init (W_down), dropout
    model = build_method(cfg.method, built.model, cfg.adapter)
    bs, nw = cfg.train.batch_size // dist.world_size, cfg.data.num_workers
    train_loader = make_loader(splits.train, bs, nw, device, shuffle=True, seed=cfg.train.seed, dist=dist)
    val_loader = make_loader(splits.val, bs, nw, device, dist=dist) if splits.val is not None else None
    test_loader = make_loader(splits.test, bs, nw, device, dist=dist)

    created = not out_dir.exists()
    if dist.is_main and not resume:
        _prepare_out_dir(out_dir, overwrite)
        for stale in ("summary.json", "metrics.jsonl", ADAPTER_FILE, CHECKPOINT_FILE):
            (out_dir / stale).unlink(missing_ok=True)
        shutil.rmtree(out_dir / "tensorboard", ignore_errors=True)
        resolved = cfg.to_dict()
        resolved["train"]["precision"] = precision
        atomic_write_text(out_dir / "config.yaml", yaml.safe_dump(resolved, sort_keys=False))
    if resume:
        (out_dir / "summary.json").unlink(missing_ok=True)  # a failed attempt's summary
    barrier()
    params = {id(p): p for p in model.parameters()}.values()
    summary = RunSummary(
        status=RunStatus.FAILED,
        method=cfg.method,
        backbone=cfg.backbone.name,
        dataset=cfg.data.name,
        rank=getattr(cfg.adapter, "rank", None),
        placement=getattr(cfg.adapter, "placement", None),
        seed=cfg.train.seed,
        trainable_params=sum(p.numel() for p in params if p.requires_grad),
        total_params=sum(p.numel() for p in params),
        num_classes=len(raw.classes),
        classes=list(raw.classes),
        split_sizes=splits.sizes(),
        weights_tag=built.weights_tag,
        weights_sha256=built.weights_sha256,
        protocol=_protocol(cfg, built.data_config),
        device=str(device),
        precision=precision,
        versions=versions(),
    )
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    try:
        views = (splits.train, splits.val, splits.test)
        ctx = FitContext(views, lambda v: make_loader(v, bs, nw, device), bs, cfg.train.seed, device, precision)
        inputs = METHODS.get(cfg.method).prepare_fit(model, (train_loader, val_loader, test_loader), ctx)
        result = fit(
            inputs.model,
            *inputs.loaders,
            cfg.train,
            device,
            [_MetricsWriter(out_dir / "metrics.jsonl"), *([tensorboard] if tensorboard else []), *callbacks]
            if dist.is_main
            else [],
            checkpoint_path=out_dir / CHECKPOINT_FILE,
            resume=resume,
        )
        result = inputs.finish(result)
        if dist.is_main:
            _write_results(out_dir, summary, result, _file_metadata(cfg, built, raw.classes, model), device)
    except BaseException as e:
        if tensorboard is not None:
            tensorboard.close()
        if dist.is_main:
            _record_failure(out_dir, summary, e, remove=created and not resume)
        raise
    if tensorboard is not None:
        tensorboard.close()
    summary.status = RunStatus.SUCCESS
    return summary


def _write_results(
    out_dir: Path, summary: RunSummary, result: Any, meta: dict[str, Any], device: torch.device
) -> None:
    save_tensors(out_dir / ADAPTER_FILE, result.best_state, meta)
    summary.test_acc, summary.test_top5 = result.test["acc"], result.test["top5"]
    summary.test_acc_last = result.test_last["acc"]
    summary.best_val_acc, summary.best_epoch, summary.selection = (
        result.best_val_acc,
        result.best_epoch,
        result.selection,
    )
    summary.train_seconds, summary.train_images_per_second = result.train_seconds, result.images_per_second
    summary.peak_memory_mb = _peak_memory_mb(device)
    summary.skipped_images = result.skipped_images
    summary.skipped_test_images = result.test["skipped"]
    summary.adapter_file_bytes = (out_dir / ADAPTER_FILE).stat().st_size
    summary.status = RunStatus.SUCCESS
    try:
        atomic_write_text(out_dir / "summary.json", json.dumps(summary.to_dict(), indent=2))
    except BaseException:
        summary.status = RunStatus.FAILED
        raise
    (out_dir / CHECKPOINT_FILE).unlink(missing_ok=True)  # finished: adapter.safetensors is the result


def _record_failure(out_dir: Path, summary: RunSummary, e: BaseException, remove: bool) -> None:
    """Bad input found during training (before any checkpoint) removes the new folder; anything else
    writes a failed summary next to the last good checkpoint, which ``--resume`` continues from."""
    if remove and isinstance(e, DataError | ConfigError) and not (out_dir / CHECKPOINT_FILE).exists():
        shutil.rmtree(out_dir, ignore_errors=True)
        return
    summary.error = f"{type(e).__name__}: {e}"
    try:
        atomic_write_text(out_dir / "summary.json", json.dumps(summary.to_dict(), indent=2))
    except OutputError as write_error:  # e.g. the disk is full: report the first error, not this one
        _logger.warning("could not record the failure: %s", write_error)


def _protocol(cfg: RunConfig, data_config: dict[str, Any]) -> dict[str, Any]:
    """What must match for two runs to share a cell of a results table."""
    return {
        "input_size": list(data_config["input_size"]),
        "mean": [round(float(m), 6) for m in data_config["mean"]],
        "std": [round(float(s), 6) for s in data_config["std"]],
        "crop_pct": float(data_config.get("crop_pct", 0.875)),
        "augment": "rrc+flip" if cfg.data.augment else "none",
        "epochs": cfg.train.epochs,
        "selection": "best_val_top1" if cfg.data.val_fraction > 0 else "last_epoch",
        "val_fraction": cfg.data.val_fraction,
        "split_seed": cfg.data.split_seed,
        "subset": cfg.data.subset,
        "test_subset": cfg.data.test_subset,
    }


def _file_metadata(cfg: RunConfig, built: Any, classes: list[str], model: nn.Module) -> dict[str, Any]:
    return {
        "backbone": cfg.backbone.name,
        "backbone_args": cfg.backbone.args,
        "backbone_config": dataclasses.asdict(cfg.backbone),
        "init_seed": cfg.train.seed,
        "weights_tag": built.weights_tag,
        "weights_sha256": built.weights_sha256,
        "method": cfg.method,
        "adapter": cfg.to_dict()["adapter"],  # the options as a mapping (dataclass or as read from config.yaml)
        "adapted_blocks": adapted_blocks(model) if cfg.adapter else [],
        "width": backbone_width(model),
        "classes": list(classes),
        "data_config": {k: list(v) if isinstance(v, tuple) else v for k, v in built.data_config.items()},
    }


# ---------------------------------------------------------------- rebuilding a trained run
@dataclass
class LoadedRun:
    model: nn.Module
    config: RunConfig
    summary: dict[str, Any]
    classes: list[str]
    data_config: dict[str, Any]
    device: torch.device
    precision: str


def load_run(run_dir: str | Path, device: str = "auto") -> LoadedRun:
    """Rebuild a finished run's best-val model from its backbone and ``adapter.safetensors``.

    Raises:
        CheckpointError: not a finished run, or the backbone weights differ from the training run's.
    """
    run_dir = Path(run_dir)
    for f in ("config.yaml", "summary.json", ADAPTER_FILE):
        if not (run_dir / f).is_file():
            raise CheckpointError(f"'{run_dir}' is not a finished run folder: {f} is missing.")
    try:
        summary = json.loads((run_dir / "summary.json").read_text())
        cfg = RunConfig.from_dict(yaml.safe_load((run_dir / "config.yaml").read_text()))
    except (json.JSONDecodeError, yaml.YAMLError) as e:
        raise CheckpointError(f"'{run_dir}' has a corrupt summary.json or config.yaml: {e}") from None
    if summary.get("status") != RunStatus.SUCCESS.value:
        raise CheckpointError(f"Run '{run_dir}' did not finish (status {summary.get('status')!r}).")
    tensors, meta = load_tensors(run_dir / ADAPTER_FILE)
    dev = resolve_device(device)
    built = create_backbone(cfg.backbone, num_classes=len(meta["classes"]), seed=cfg.train.seed)
    torch.manual_seed(cfg.train.seed)
    model = build_method(cfg.method, built.model, cfg.adapter)
    check_adapter_file(meta, _file_metadata(cfg, built, meta["classes"], model), str(run_dir / ADAPTER_FILE))
    load_trained_tensors(model, tensors, str(run_dir / ADAPTER_FILE))
    return LoadedRun(
        model.to(dev).eval(),
        cfg,
        summary,
        meta["classes"],
        built.data_config,
        dev,
        resolve_precision(cfg.train.precision, dev),
    )


def evaluate_run(run_dir: str | Path, device: str = "auto") -> dict[str, Any]:
    """Re-evaluate a finished run on its test split; returns test metrics and the recorded ones."""
    loaded = load_run(run_dir, device)
    cfg = loaded.config
    splits = build_splits(cfg.data, loaded.data_config)
    loader = make_loader(splits.test, cfg.train.batch_size, cfg.data.num_workers, loaded.device)
    t0 = time.perf_counter()
    metrics = evaluate(loaded.model, loader, loaded.device, loaded.precision)
    return {
        "test_acc": metrics["acc"],
        "test_top5": metrics["top5"],
        "test_loss": metrics["loss"],
        "n": metrics["n"],
        "skipped": metrics["skipped"],
        "recorded_test_acc": loaded.summary.get("test_acc"),
        "seconds": time.perf_counter() - t0,
    }


def predict(
    run_dir: str | Path, images: list[str | Path], topk: int = 5, device: str = "auto"
) -> list[dict[str, Any]]:
    """Top-k classes with probabilities for each image file."""
    from PIL import Image

    loaded = load_run(run_dir, device)
    _, eval_tf = build_transforms(loaded.data_config, augment=False)
    out = []
    for path in images:
        try:
            with Image.open(path) as img:
                x = eval_tf(img.convert("RGB"))[None].to(loaded.device)
        except (OSError, ValueError) as e:
            raise ConfigError(f"Cannot read image '{path}': {e}") from None
        with torch.no_grad():
            probs = loaded.model(x).float().softmax(-1)[0]
        p, i = probs.topk(min(topk, probs.numel()))
        out.append(
            {"image": str(path), "top": [(loaded.classes[j], float(q)) for q, j in zip(p.tolist(), i.tolist())]}
        )
    return out
