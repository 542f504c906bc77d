"""Dataset registry and the one function that turns a DataConfig into train/val/test views."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..config import DataConfig
from ..errors import ConfigError, DataError
from ..registry import Registry
from .base import RawDataset, SplitView
from .splits import subset_indices, train_val_indices
from .transforms import build_transforms

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

    Validation comes from the dataset's official val split when it has one, else a stratified
    ``val_fraction`` of train drawn with ``split_seed`` (never the training seed).
    """
    raw = raw if raw is not None else load_raw(cfg)
    train_tf, eval_tf = build_transforms(data_config, augment=cfg.augment, resize=cfg.resize)
    if raw.val is not None:
        train_idx, val_src, val_idx = range(len(raw.train)), raw.val, range(len(raw.val))
    else:
        train_idx, val_idx = train_val_indices(raw.train.targets, cfg.val_fraction, cfg.split_seed)
        val_src = raw.train
    train_idx = subset_indices(train_idx, raw.train.targets, cfg.subset, cfg.split_seed)
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
