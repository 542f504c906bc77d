"""Rebuilding a finished run: its best-validation model (``load_run``), a re-evaluation, predictions."""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..config import LEGACY_OPTIONS, RunConfig
from ..data import build_splits, build_transforms, find_images, read_images
from ..data.loaders import make_loader
from ..engine import evaluate
from ..engine.checkpoint import load_trained_tensors
from ..errors import CheckpointError, OutputError
from ..methods import METHODS
from ..resolve import resolve_run
from .adapter_file import check_adapter_file, check_task, file_metadata, file_options, read_adapter_file
from .folder import CONFIG_FILE, SUMMARY_FILE, adapter_file_path, read_state
from .rank_curve import serve_at_rank
from .skipped import gather_unreadable, write_skipped
from .summary import RunStatus

__all__ = ["LoadedRun", "evaluate_run", "load_run", "predict"]

_logger = logging.getLogger(__name__)
CONFIG_SOURCE = "config.yaml"
NO_CONFIG_SOURCE = "the adapter file's metadata (config.yaml is missing)"


@dataclass
class LoadedRun:
    model: nn.Module
    config: RunConfig  # resolved (:class:`~adaptertune.resolve.ResolvedRun`) for ``device``
    summary: dict[str, Any]
    classes: list[str]
    data_config: dict[str, Any]
    device: torch.device
    precision: str
    config_source: str = CONFIG_SOURCE  # or what was rebuilt from the adapter file's metadata, and why


def _model_config(meta: dict[str, Any]) -> dict[str, Any]:
    """The model-defining part of a run config, as the adapter file's metadata records it."""
    backbone = meta.get("backbone_config") or {"name": meta["backbone"], "args": meta.get("backbone_args") or {}}
    return {"backbone": backbone, "method": meta["method"], LEGACY_OPTIONS: file_options(meta)}  # as any method's


def config_for_model(config: dict[str, Any] | None, meta: dict[str, Any]) -> tuple[RunConfig, str]:
    """The config to rebuild the model with, and a phrase naming its source.

    config.yaml when it names the backbone and the method; when it is missing or incomplete, the backbone,
    method and adapter options come from the adapter file's metadata (the rest of config.yaml is kept). A
    config.yaml that disagrees with the file stays an error (:func:`check_adapter_file` names both sides): a
    swapped adapter file is more often a mistake than an intent.
    """
    if config is not None and all(k in config for k in ("backbone", "method")):
        return RunConfig.from_dict(config), CONFIG_SOURCE
    base = {"train": {"seed": meta.get("init_seed", 0)}}  # the seed of a random-init backbone; config.yaml's wins
    cfg = RunConfig.from_dict({**base, **(config or {}), **_model_config(meta)})
    if config is None:
        return cfg, NO_CONFIG_SOURCE
    lacking = ", ".join(k for k in ("backbone", "method") if k not in config)
    return cfg, f"the adapter file's metadata (config.yaml lacks {lacking})"


def load_run(run_dir: str | Path, device: str = "auto") -> LoadedRun:
    """Rebuild a finished run's best-val model from its backbone and adapter file (``ADAPTER_FILE``, or the
    legacy ``adapter.safetensors``).

    Raises:
        CheckpointError: not a finished run, the backbone weights differ from the training run's, or the adapter
            file was trained on another task than the folder's summary records.
    """
    run_dir = Path(run_dir)
    weights = adapter_file_path(run_dir)
    for f in (SUMMARY_FILE, weights.name):
        if not (run_dir / f).is_file():
            raise CheckpointError(f"'{run_dir}' is not a finished run folder: {f} is missing.")
    state = read_state(run_dir, check_lock=False)
    if state.summary is None:
        raise CheckpointError(f"'{run_dir}' has a corrupt summary.json or config.yaml: {state.detail}")
    if state.summary.status is not RunStatus.SUCCESS:
        raise CheckpointError(f"Run '{run_dir}' did not finish (status {state.summary.status.value!r}).")
    tensors, meta = read_adapter_file(weights)
    check_task(meta, state.summary.to_dict(), weights.name, str(run_dir))
    cfg, source = config_for_model(state.config, meta)
    if source != CONFIG_SOURCE:
        _logger.warning("'%s': the model is rebuilt from %s", run_dir, source)
    rr = resolve_run(dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, device=device)))
    built, model = rr.build_model(len(meta["classes"]))
    check_adapter_file(meta, file_metadata(rr.config, built, meta["classes"], model), str(weights))
    load_trained_tensors(model, tensors, str(weights))
    return LoadedRun(
        model.to(rr.device).eval(),
        rr.config,
        state.summary.to_dict(),
        meta["classes"],
        built.data_config,
        rr.device,
        rr.precision,
        source,
    )


def evaluate_run(run_dir: str | Path, device: str = "auto") -> dict[str, Any]:
    """Re-evaluate a finished run on its test split; returns test metrics and the recorded ones.

    The test images it could not read replace the test lines of the run's ``skipped.txt``
    (:mod:`.skipped`); ``unreadable`` lists them and ``skipped_file`` is the file (None: nothing skipped).
    """
    loaded = load_run(run_dir, device)
    cfg = loaded.config
    if loaded.config_source == NO_CONFIG_SOURCE:
        raise CheckpointError(
            f"'{run_dir}' has no {CONFIG_FILE}: eval needs its data section to find the test split; "
            "predict and export work from the adapter file alone."
        )
    splits = build_splits(cfg.data, loaded.data_config)
    loader = make_loader(
        splits.test, cfg.train.batch_size, cfg.data.num_workers, loaded.device, batched=cfg.data.batched
    )
    t0 = time.perf_counter()
    metrics = evaluate(loaded.model, loader, loaded.device, loaded.precision)
    seconds = time.perf_counter() - t0
    unreadable = gather_unreadable([("test", loader)]).get("test", [])
    try:  # a read-only run folder still gets its evaluation; the CLI says the file could not be written
        skipped_file, write_error = write_skipped(run_dir, {"test": unreadable}, replace=("test",)), None
    except OutputError as e:
        skipped_file, write_error = None, str(e)
    return {
        "test_acc": metrics["acc"],
        "test_top5": metrics["top5"],
        "test_loss": metrics["loss"],
        "n": metrics["n"],
        "skipped": metrics["skipped"],
        "unreadable": [list(u) for u in unreadable],  # [path, reason] of each test image skipped
        "skipped_file": None if skipped_file is None else str(skipped_file),
        "skipped_file_error": write_error,
        "recorded_test_acc": loaded.summary.get("test_acc"),
        "model_from": loaded.config_source,
        "seconds": seconds,
    }


def predict(
    run_dir: str | Path, images: list[str | Path], topk: int = 5, device: str = "auto", rank: int | None = None
) -> list[dict[str, Any]]:
    """Top-k classes with probabilities for each image file; ``images`` may name files, folders and globs.
    ``rank``: a nested run's model at that rank (:func:`~adaptertune.runs.rank_curve.serve_at_rank`).

    A file that cannot be decoded gives ``{"image", "error"}`` instead of ``{"image", "top"}``.

    Raises:
        DataError: a path or pattern that names nothing, or not one of the images could be read.
    """
    loaded = load_run(run_dir, device)
    serve_at_rank(loaded.model, METHODS.get(loaded.config.method), loaded.config.method_options, rank)
    _, eval_tf = build_transforms(loaded.data_config, augment=False, resize=loaded.config.data.resize)
    out = []
    for path, x in read_images(find_images(images), eval_tf):
        if isinstance(x, str):
            out.append({"image": str(path), "error": x})
            continue
        with torch.no_grad():
            probs = loaded.model(x[None].to(loaded.device)).float().softmax(-1)[0]
        p, i = probs.topk(min(topk, probs.numel()))
        out.append(
            {"image": str(path), "top": [(loaded.classes[j], float(q)) for q, j in zip(p.tolist(), i.tolist())]}
        )
    return out
