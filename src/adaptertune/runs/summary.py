"""What a run folder records: the status vocabulary, the ``summary.json`` schema and the run's protocol.

One :class:`RunStatus` serves runs, resume, sweeps and reports; one :class:`RunSummary` is written for every
outcome (a finished run, a failed or interrupted one, a sweep point rejected before it started). The
protocol (:func:`make_protocol`) is what two runs must share to be averaged into one report cell, and the
key lists below say which config keys may differ between a run and its resumption or between the seeds of
one cell.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from ..config_keys import flatten_config, options_section

__all__ = [
    "CELL_FREE_KEYS",
    "NON_NUMERIC_KEYS",
    "RESUME_FREE_KEYS",
    "RunStatus",
    "RunSummary",
    "augment_label",
    "budget_label",
    "config_differences",
    "make_protocol",
]


class RunStatus(StrEnum):
    """The state of a run folder (or of a sweep point, which is one run folder)."""

    SUCCESS = "success"  # finished: summary.json holds the results
    FAILED = "failed"  # stopped by an error (summary.json names it); resumable when config.yaml is there
    INTERRUPTED = "interrupted"  # stopped by the user (Ctrl-C); resumable
    INCOMPLETE = "incomplete"  # no summary.json: killed, or never got going; resumable when config.yaml is there
    CORRUPT = "corrupt"  # summary.json or config.yaml unreadable, or a success summary without its results
    RUNNING = "running"  # another process holds the folder's lock now
    PENDING = "pending"  # no folder yet
    INVALID = "invalid"  # a sweep point whose config is rejected before training (recorded as failed)
    SKIPPED = "skipped"  # a sweep point left to another process (it holds the point, or finished it)


@dataclass
class RunSummary:
    """``summary.json``: the same schema for every outcome; a failure fills what was known when it stopped."""

    status: RunStatus
    method: str = ""
    backbone: str = ""
    dataset: str = ""
    label: str = ""  # the variant as reports name it (Method.label: ``lora r=8 qkv+mlp``, ``head``)
    rank: int | None = None
    placement: str | list[int] | None = None
    seed: int | None = None
    # the seed the training subset and its validation set were drawn with (`data.subset_per_seed`; None: the
    # subset fixed by `data.split_seed`)
    subset_seed: int | None = None
    test_acc: float | None = None  # top-1 %, best-val checkpoint
    test_top5: float | None = None
    # top-1 %, last epoch (reported, never used for selection); None in a run tested from a tuning run
    # (``tested_from``) whose selected epoch is not its last: only the selected model is kept
    test_acc_last: float | None = None
    best_val_acc: float | None = None
    best_epoch: int | None = None
    stopped_epoch: int | None = None  # the epoch early stopping ended training at (None: all epochs ran)
    # a tuning run stopped by its search's pruner (sweeps/pruning.py) after this epoch (None: not pruned)
    pruned_at_epoch: int | None = None
    selection: str = "best_val_top1"
    trainable_params: int = 0
    total_params: int = 0
    adapter_file_bytes: int | None = None
    train_seconds: float | None = None
    train_images_per_second: float | None = None
    peak_memory_mb: float | None = None
    skipped_images: int = 0  # corrupt training images skipped (all epochs)
    skipped_test_images: int = 0  # corrupt test images skipped (not in test_acc's denominator)
    # unreadable images per split, each counted once (skipped.txt names them); absent split: none
    unreadable_images: dict[str, int] = field(default_factory=dict)
    num_classes: int = 0
    classes: list[str] = field(default_factory=list)
    split_sizes: dict[str, int] = field(default_factory=dict)
    weights_tag: str = ""
    weights_sha256: str = ""
    weights_source: dict[str, Any] = field(default_factory=dict)  # hub repo / cache file / folder, file sha256
    protocol: dict[str, Any] = field(default_factory=dict)
    device: str = ""
    precision: str = ""
    backend: dict[str, Any] = field(default_factory=dict)  # CUDA math settings (TF32, cudnn.benchmark)
    versions: dict[str, str] = field(default_factory=dict)
    # a run of a learning-rate search: trained and validated only, the test set never evaluated (reports skip it)
    tuning_run: bool = False
    # how this run's hyper-parameters were chosen on validation (sweeps.tuning_runs): keys, grid, val_acc per
    # value, chosen, budget, rule; None: not tuned
    tuning: dict[str, Any] | None = None
    # the selected model's per-image test outputs in the folder (runs/predictions.py); None: not written (a
    # tuning run, or torchrun)
    predictions: str | None = None
    # "tune/<group>/<run>": this run was not trained; it is that tuning run (same config but its folder), its
    # selected model tested after the choice (sweeps/reuse.py); None: trained here
    tested_from: str | None = None
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["status"] = self.status.value
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunSummary:
        """Read a summary; keys this version does not know are ignored (a newer writer's extra fields).

        Raises:
            ValueError: the status is not a :class:`RunStatus` value.
        """
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known and k != "status"}, status=RunStatus(d.get("status")))

    @classmethod
    def failure(
        cls, error: str, config: dict[str, Any] | None = None, status: RunStatus = RunStatus.FAILED
    ) -> RunSummary:
        """The summary of a run that stopped before it could fill more than its config says."""
        config = config if isinstance(config, dict) else {}
        section = lambda k: config.get(k) if isinstance(config.get(k), dict) else {}  # noqa: E731
        adapter, train = options_section(config) or {}, section("train")
        return cls(
            status=status,
            method=str(config.get("method") or ""),
            backbone=str(section("backbone").get("name") or ""),
            dataset=str(section("data").get("name") or ""),
            rank=adapter.get("rank"),
            placement=adapter.get("placement"),
            seed=train.get("seed"),
            error=error,
        )

    def missing_results(self) -> list[str]:
        """Fields a finished run must have for a report (empty when the summary is complete)."""
        need = {
            "dataset": self.dataset,
            "backbone": self.backbone,
            "method": self.method,
            "seed": self.seed,
            "protocol": self.protocol,
        }
        if self.tuning_run:
            need["best_val_acc"] = self.best_val_acc
        else:
            need["test_acc"] = self.test_acc
        return [k for k, v in need.items() if v is None or v == "" or v == {}]


# Config keys that do not change a run's numbers: they may differ between an interrupted run and its
# resumption, and between the runs of one report cell.
NON_NUMERIC_KEYS = frozenset({"data.num_workers", "train.device", "train.tensorboard", "out_dir"})
RESUME_FREE_KEYS = NON_NUMERIC_KEYS
# A report cell averages over the seed (and the cross-validation fold: a cell's runs are paired by (seed,
# fold); with data.subset_per_seed each seed draws its own subset); data.root is compared resolved, as the
# protocol's data_root.
CELL_FREE_KEYS = NON_NUMERIC_KEYS | {"train.seed", "data.cv_fold", "data.root", "data.subset_seed"}


def make_protocol(
    cfg: Any, data_config: dict[str, Any], classes: list[str], image_counts: dict[str, int], *, selection: str
) -> dict[str, Any]:
    """What must match for two runs to share a cell of a results table: the data and how it is used.

    Args:
        cfg: the resolved :class:`~adaptertune.config.RunConfig`.
        data_config: the backbone's input config (size, mean, std, crop).
        classes: the dataset's class names.
        image_counts: images per split of the dataset as loaded (before validation split and subsets).
        selection: the selection rule the run trains with
            (:attr:`~adaptertune.resolve.ResolvedRun.selection`, decided from its splits).
    """
    root = cfg.data.root
    protocol = {
        "dataset": cfg.data.name,
        # the folder itself, wherever the run was started from (None: the dataset's default location)
        "data_root": str(Path(root).expanduser().resolve()) if root and Path(root).expanduser().exists() else root,
        "classes": list(classes),
        "image_counts": dict(image_counts),
        "input_size": list(data_config["input_size"]),
        "mean": [round(float(m), 6) for m in data_config["mean"]],
        "std": [round(float(s), 6) for s in data_config["std"]],
        "crop_pct": float(data_config.get("crop_pct", 0.875)),
        "augment": augment_label(cfg.data),
        "epochs": cfg.train.epochs,
        "budget": budget_label(cfg.train),
        "selection": str(selection),
        "val_fraction": cfg.data.val_fraction,
        "val_subset": cfg.data.val_subset,
        "split_seed": cfg.data.split_seed,
        "subset": cfg.data.subset,
        "test_subset": cfg.data.test_subset,
    }
    if cfg.data.resize != "crop":  # recorded only when set, so older runs keep their protocol
        protocol["resize"] = cfg.data.resize
    if cfg.data.cache is not None:  # pre-resized squares of this side (data/cache.py), not the files' pixels
        from ..data.cache import cache_side

        protocol["pre_resized"] = cache_side(data_config, cfg.data.resize)
    if cfg.data.split is not None:
        protocol["data_split"] = cfg.data.split
    if cfg.data.subset_per_seed:  # each training seed draws its own subset and validation set
        protocol["subset_per_seed"] = True
    if cfg.data.cv_folds is not None:  # k-fold CV: the pooled images, cut into folds fixed by split_seed
        protocol["cv_folds"], protocol["cv_fold"] = cfg.data.cv_folds, cfg.data.cv_fold
    # timm recipes: recorded only when set (older runs keep their protocol)
    for key, value, default in (
        ("mixup", cfg.data.mixup, 0.0),
        ("cutmix", cfg.data.cutmix, 0.0),
        ("optimizer", cfg.train.optimizer, "adamw"),
        ("layer_decay", cfg.train.layer_decay, None),
        ("ema", cfg.train.ema, None),
        ("ema_eval", cfg.train.ema_eval, False),
        ("accum_steps", cfg.train.accum_steps, 1),
        ("grad_checkpointing", cfg.train.grad_checkpointing, False),
    ):
        if value != default:
            protocol[key] = value
    return protocol


def budget_label(train: Any) -> str:
    """How long a run trains: ``fixed`` (all ``train.epochs``) or ``early_stop(patience=P)`` (on validation;
    ``,min_delta=D`` when set), so equal-step and trained-out runs never share a cell unlabelled."""
    if train.early_stop is None:
        return "fixed"
    delta = f",min_delta={train.early_stop_min_delta:g}" if train.early_stop_min_delta else ""
    return f"early_stop(patience={train.early_stop}{delta})"


def augment_label(data: Any) -> str:
    """The training augmentation of a ``DataConfig`` as the protocol names it: ``none``, ``rrc+flip``
    (``basic``), ``rrc`` (``basic``, ``hflip`` off), ``rrc+flip+rand-m9-mstd0.5+erase0.25`` (``randaug``); a
    crop scale other than 0.08 is written into the crop (``rrc(0.5)``). Labels of settings older than
    ``hflip`` are unchanged, so their runs keep sharing cells."""
    if not data.augment or data.aug == "none":
        return "none"
    parts = ["rrc" if data.crop_scale == 0.08 else f"rrc({data.crop_scale:g})", *(["flip"] if data.hflip else [])]
    return "+".join(parts if data.aug == "basic" else [*parts, "rand-m9-mstd0.5", "erase0.25"])


def config_differences(
    a: dict[str, Any], b: dict[str, Any], free: frozenset[str] | set[str] = frozenset()
) -> list[tuple[str, Any, Any]]:
    """``(dotted key, value in a, value in b)`` for every key outside ``free`` where two configs differ."""
    fa, fb = flatten_config(a), flatten_config(b)
    return [(k, fa.get(k), fb.get(k)) for k in sorted(set(fa) | set(fb)) if k not in free and fa.get(k) != fb.get(k)]
