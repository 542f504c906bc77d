"""Dataset registry and the one function that turns a DataConfig into train/val/test views."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..config import DataConfig
from ..errors import ConfigError, DataError
from ..registry import Registry
from .base import ConcatSource, RawDataset, SplitView
from .splits import cv_split_indices, run_split_indices, subset_indices, val_size
from .transforms import build_transforms

_logger = logging.getLogger(__name__)

__all__ = ["DATASETS", "DataSplits", "DatasetInfo", "build_splits", "load_raw", "register_dataset"]


@dataclass(frozen=True)
class DatasetInfo:
    """A named dataset.

    Args:
        name: registry name as users type it.
        description: one line.
        load: ``load(cfg) -> RawDataset``; raises DataError when files are missing (naming them).
        num_classes: fixed class count, None when it depends on the files (imagefolder, csv, ...).
        source: where the files come from.
        splits: human description of the split sizes.
        present: ``present(root) -> bool``: are the files on this machine.
        split_choices: the published splits ``data.split`` may name, the default first; empty: only one.
    """

    name: str
    description: str
    load: Callable[[DataConfig], RawDataset]
    num_classes: int | None = None
    source: str = ""
    splits: str = ""
    present: Callable[[str | None], bool] | None = None
    split_choices: tuple[str, ...] = ()


DATASETS: Registry[DatasetInfo] = Registry("dataset")


def register_dataset(info: DatasetInfo) -> DatasetInfo:
    return DATASETS.register(info)


@dataclass
class DataSplits:
    train: SplitView
    val: SplitView | None
    test: SplitView
    classes: list[str]

    def sizes(self) -> dict[str, int]:
        return {"train": len(self.train), "val": len(self.val) if self.val else 0, "test": len(self.test)}


def load_raw(cfg: DataConfig) -> RawDataset:
    """Load and check dataset ``cfg.name`` (no transforms yet).

    Raises:
        ConfigError: ``cfg.split`` is not one of the dataset's published splits.
    """
    info = DATASETS.get(cfg.name)
    if cfg.split is not None and cfg.split not in info.split_choices:
        accepted = f"one of {', '.join(info.split_choices)}" if info.split_choices else "unset (it has one split)"
        raise ConfigError(f"Dataset '{cfg.name}' has no split '{cfg.split}'; `data.split` must be {accepted}.")
    raw = info.load(cfg)
    raw.check(cfg.name)
    return raw


def build_splits(cfg: DataConfig, data_config: dict[str, Any], raw: RawDataset | None = None) -> DataSplits:
    """Build the train / val / test views of ``raw`` (loaded from ``cfg`` if None) with the backbone's transforms.

    Validation is sized to the run and, unless ``subset_per_seed``, never chosen by the training seed:

    - a dataset with an official val split uses it whole, or, with ``subset`` or ``val_subset``, a fixed
      stratified part of it of ``val_subset`` images (else ``val_fraction`` of the subset);
    - otherwise validation comes from the training pool (:func:`~adaptertune.data.splits.run_split_indices`):
      ``val_fraction`` of the pool without ``subset``; with it, ``val_fraction`` of the subset (or
      ``val_subset`` images) drawn from the pool outside the subset, both fixed by ``split_seed``;
    - with ``cv_folds`` (k-fold cross-validation), the dataset's train, official val (if any) and test images
      are pooled; fold ``cv_fold`` is the test set, validation is carved from the other folds and the rest
      trains (:func:`~adaptertune.data.splits.cv_split_indices`).

    With ``subset_per_seed`` the subset and its validation set are drawn as above with ``cfg.subset_seed`` (the
    seed resolution derived from ``split_seed`` and the training seed) in place of ``split_seed``; the test
    split (and ``test_subset``) is always fixed by ``split_seed``.

    Raises:
        DataError: the subset and its validation do not fit in the training pool.
        ConfigError: ``subset_per_seed`` without the ``subset_seed`` resolution derives (an unresolved config).
    """
    if cfg.subset_per_seed and cfg.subset_seed is None:
        raise ConfigError(
            "`data.subset_per_seed` is on but `data.subset_seed` is undecided; resolve the run config first "
            "(adaptertune.resolve.resolve_config derives it from the split and training seeds)."
        )
    raw = raw if raw is not None else load_raw(cfg)
    if cfg.cache is not None:
        from .cache import cache_raw

        raw = cache_raw(raw, cfg.cache, data_config, cfg.resize, cfg.name)
    train_tf, eval_tf = build_transforms(
        data_config, augment=cfg.augment, resize=cfg.resize, aug=cfg.aug, hflip=cfg.hflip, crop_scale=cfg.crop_scale
    )
    if cfg.cv_folds is not None:
        pool = ConcatSource([s for s in (raw.train, raw.val, raw.test) if s is not None])
        idx = cv_split_indices(
            pool.targets, cfg.cv_folds, cfg.cv_fold, cfg.val_fraction, cfg.split_seed, cfg.val_subset
        )
        train, val, test = (SplitView(pool, i, tf, cfg.strict) for i, tf in zip(idx, (train_tf, eval_tf, eval_tf)))
        return DataSplits(train, val if len(val) else None, test, raw.classes)
    draw = cfg.subset_seed if cfg.subset_seed is not None else cfg.split_seed  # the subset and its validation
    if raw.val is not None:
        if cfg.subset is not None and cfg.subset > len(raw.train):
            raise DataError(
                f"`data.subset` {cfg.subset} exceeds the {len(raw.train)} training images of '{cfg.name}'."
            )
        train_idx = subset_indices(np.arange(len(raw.train)), raw.train.targets, cfg.subset, draw)
        n_val = None  # the official val split, whole
        if cfg.subset is not None or cfg.val_subset is not None:
            n_val = val_size(cfg.subset or len(raw.train), cfg.val_fraction, cfg.val_subset)
            if n_val > len(raw.val):
                _logger.warning(
                    "'%s': %d validation images asked, its val split has %d", cfg.name, n_val, len(raw.val)
                )
        val_src, val_idx = raw.val, subset_indices(np.arange(len(raw.val)), raw.val.targets, n_val, draw)
    else:
        train_idx, val_idx = run_split_indices(raw.train.targets, cfg.val_fraction, draw, cfg.subset, cfg.val_subset)
        val_src = raw.train
    test_idx = subset_indices(range(len(raw.test)), raw.test.targets, cfg.test_subset, cfg.split_seed)
    if len(train_idx) == 0:
        raise DataError(f"Dataset '{cfg.name}' has no training images left after the validation split.")
    val = SplitView(val_src, val_idx, eval_tf, cfg.strict) if len(val_idx) else None
    return DataSplits(
        SplitView(raw.train, train_idx, train_tf, cfg.strict),
        val,
        SplitView(raw.test, test_idx, eval_tf, cfg.strict),
        raw.classes,
    )
