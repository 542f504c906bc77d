"""Datasets: a registry of loaders, seeded splits and the backbone's transforms."""

from .base import ArraySource, ImageFiles, ImageSource, RawDataset, SplitView, collate_skip
from .images import find_images, open_rgb, read_images, to_rgb
from .registry import DATASETS, DatasetInfo, DataSplits, build_splits, load_raw, register_dataset
from .splits import run_split_indices, stratified_order, subset_indices, train_val_indices, val_size
from .transforms import build_transforms

__all__ = [
    "DATASETS",
    "ArraySource",
    "DataSplits",
    "DatasetInfo",
    "ImageFiles",
    "ImageSource",
    "RawDataset",
    "SplitView",
    "build_splits",
    "build_transforms",
    "collate_skip",
    "find_images",
    "load_raw",
    "open_rgb",
    "read_images",
    "register_dataset",
    "run_split_indices",
    "stratified_order",
    "subset_indices",
    "to_rgb",
    "train_val_indices",
    "val_size",
]
from . import csv_files, derived, fgvc, fine_grained, folders, hf, imagenet_folders, offline, petl, vision  # noqa: E402,F401,I001  (register the loaders)
