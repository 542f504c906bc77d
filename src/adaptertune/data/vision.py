"""CIFAR-10, CIFAR-100 (python pickle batches) and SVHN (.mat), read from their official files.

torchvision downloads them (``--download``); reading is done here so that a missing or broken file is a
DataError naming it, and so the same code reads the small fixtures of the tests (torchvision's own classes
refuse any file whose MD5 differs from the official one).
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

from ..config import DataConfig
from ..errors import DataError
from ..extras import require
from .base import ArraySource, RawDataset
from .locate import dataset_dir, download, files_present, require_files
from .registry import DatasetInfo, register_dataset

__all__ = ["load_cifar10", "load_cifar100", "load_svhn", "read_cifar_batch"]

_CIFAR10_DIR = "cifar-10-batches-py"
_CIFAR10_FILES = [*(f"data_batch_{i}" for i in range(1, 6)), "test_batch", "batches.meta"]
_CIFAR100_DIR = "cifar-100-python"
_CIFAR100_FILES = ["train", "test", "meta"]


def _unpickle(path: Path) -> dict:
    # The CIFAR python batches are pickles by format (torchvision reads them the same way).
    try:
        with open(path, "rb") as f:
            return pickle.load(f, encoding="latin1")
    except (OSError, pickle.UnpicklingError, EOFError, ValueError) as e:
        raise DataError(f"Cannot read CIFAR file '{path}': {type(e).__name__}: {e}") from None


def read_cifar_batch(path: Path, label_key: str) -> tuple[np.ndarray, np.ndarray]:
    """(images (N, 32, 32, 3) uint8, labels (N,)) from one CIFAR python batch."""
    d = _unpickle(path)
    if "data" not in d or label_key not in d:
        raise DataError(f"'{path}' is not a CIFAR batch: no 'data'/'{label_key}' entries.")
    data = np.asarray(d["data"], dtype=np.uint8)
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(data) != len(d[label_key]):
        raise DataError(
            f"'{path}' holds data of shape {data.shape} for {len(d[label_key])} labels; expected (N, 3072)."
        )
    return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), np.asarray(d[label_key], dtype=np.int64)


def _cifar(cfg: DataConfig, name: str, folder: str, files: list[str], fetch) -> Path:
    download(cfg, name, fetch)
    base = dataset_dir(cfg.root, folder)
    require_files(name, base, files)
    return base


def load_cifar10(cfg: DataConfig) -> RawDataset:
    from torchvision.datasets import CIFAR10

    base = _cifar(cfg, "cifar10", _CIFAR10_DIR, _CIFAR10_FILES, lambda r: CIFAR10(r, download=True))
    parts = [read_cifar_batch(base / f"data_batch_{i}", "labels") for i in range(1, 6)]
    test = read_cifar_batch(base / "test_batch", "labels")
    classes = list(_unpickle(base / "batches.meta")["label_names"])
    train = ArraySource(np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]))
    return RawDataset(train, ArraySource(*test), classes)


def load_cifar100(cfg: DataConfig) -> RawDataset:
    from torchvision.datasets import CIFAR100

    base = _cifar(cfg, "cifar100", _CIFAR100_DIR, _CIFAR100_FILES, lambda r: CIFAR100(r, download=True))
    train = read_cifar_batch(base / "train", "fine_labels")
    test = read_cifar_batch(base / "test", "fine_labels")
    classes = list(_unpickle(base / "meta")["fine_label_names"])
    return RawDataset(ArraySource(*train), ArraySource(*test), classes)


def _read_svhn(path: Path) -> tuple[np.ndarray, np.ndarray]:
    io = require("scipy.io", "Reading SVHN's .mat files")
    try:
        mat = io.loadmat(str(path))
    except (OSError, ValueError, TypeError) as e:
        raise DataError(f"Cannot read SVHN file '{path}': {e}") from None
    if "X" not in mat or "y" not in mat:
        raise DataError(f"'{path}' is not an SVHN .mat file: no 'X'/'y' arrays.")
    x, y = np.asarray(mat["X"], dtype=np.uint8), np.asarray(mat["y"], dtype=np.int64).reshape(-1)
    if x.ndim != 4 or x.shape[:3] != (32, 32, 3) or x.shape[3] != len(y):
        raise DataError(f"'{path}' has X {x.shape} for {len(y)} labels; expected (32, 32, 3, N).")
    return x.transpose(3, 0, 1, 2), np.where(y == 10, 0, y)  # digit 0 is stored as label 10


def load_svhn(cfg: DataConfig) -> RawDataset:
    from torchvision.datasets import SVHN

    def fetch(root: str) -> None:
        for split in ("train", "test"):
            SVHN(root, split=split, download=True)

    download(cfg, "svhn", fetch)
    base = dataset_dir(cfg.root, "")
    require_files("svhn", base, ["train_32x32.mat", "test_32x32.mat"])
    train, test = _read_svhn(base / "train_32x32.mat"), _read_svhn(base / "test_32x32.mat")
    return RawDataset(ArraySource(*train), ArraySource(*test), [str(d) for d in range(10)])


register_dataset(
    DatasetInfo(
        "cifar10",
        "CIFAR-10: 32x32 colour images, 10 classes (paper)",
        load_cifar10,
        num_classes=10,
        source=f"--data-root DIR holding {_CIFAR10_DIR}/ (python batches), or --download",
        splits="train 50000 / test 10000",
        present=files_present(_CIFAR10_DIR, _CIFAR10_FILES),
    )
)
register_dataset(
    DatasetInfo(
        "cifar100",
        "CIFAR-100: 32x32 colour images, 100 fine classes (paper)",
        load_cifar100,
        num_classes=100,
        source=f"--data-root DIR holding {_CIFAR100_DIR}/ (python version), or --download",
        splits="train 50000 / test 10000",
        present=files_present(_CIFAR100_DIR, _CIFAR100_FILES),
    )
)
register_dataset(
    DatasetInfo(
        "svhn",
        "SVHN cropped digits: 32x32 colour, 10 classes; train -> test (extra not used) (paper)",
        load_svhn,
        num_classes=10,
        source="--data-root DIR holding train_32x32.mat and test_32x32.mat, or --download",
        splits="train 73257 / test 26032",
        present=files_present("", ["train_32x32.mat", "test_32x32.mat"]),
    )
)
