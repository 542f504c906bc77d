"""Tasks derived from the offline sets by relabelling or class subsets (same images, same test split).

Used by the rank-advice validation (several tasks on one backbone): a coarser task on the same images
(Fashion-MNIST superclasses, MNIST parity) and a fine-grained one (Fashion-MNIST footwear), plus scikit-learn's
8x8 digits when scikit-learn is installed.
"""

from __future__ import annotations

import gzip
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from ..config import DataConfig
from ..errors import DataError
from .base import ArraySource, RawDataset
from .offline import (
    FASHION_MNIST_CLASSES,
    _fixed_test_split,
    load_fashion_mnist,
    load_mnist_5k,
    packaged_file,
)
from .registry import DATASETS, DatasetInfo, register_dataset

__all__ = ["FASHION_SUPERCLASSES", "load_digits", "relabel"]

# Fashion-MNIST's 10 classes grouped by garment kind
FASHION_SUPERCLASSES: dict[str, list[str]] = {
    "top": ["T-shirt/top", "Pullover", "Coat", "Shirt"],
    "trouser or dress": ["Trouser", "Dress"],
    "footwear": ["Sandal", "Sneaker", "Ankle boot"],
    "bag": ["Bag"],
}
_FOOTWEAR = ["Sandal", "Sneaker", "Ankle boot"]


def relabel(raw: RawDataset, mapping: Sequence[int | None], classes: list[str]) -> RawDataset:
    """Map each old class ``c`` to ``mapping[c]`` (None: drop its images); both splits, same images.

    Raises:
        DataError: a source is not held in an array, or the mapping does not cover every old class.
    """
    if len(mapping) != len(raw.classes):
        raise DataError(f"A relabelling needs one entry per class ({len(raw.classes)}), got {len(mapping)}.")

    def one(src: object) -> ArraySource:
        if not isinstance(src, ArraySource):
            raise DataError(f"Cannot relabel a {type(src).__name__}; derived tasks need array-backed data.")
        old = np.asarray(src.targets)
        new = np.array([-1 if mapping[t] is None else mapping[t] for t in old])
        keep = new >= 0
        return ArraySource(src.images[keep], new[keep])

    return RawDataset(one(raw.train), one(raw.test), list(classes), None if raw.val is None else one(raw.val))


def _fashion_super(cfg: DataConfig) -> RawDataset:
    names = list(FASHION_SUPERCLASSES)
    index = {c: names.index(s) for s, members in FASHION_SUPERCLASSES.items() for c in members}
    return relabel(load_fashion_mnist(cfg), [index[c] for c in FASHION_MNIST_CLASSES], names)


def _fashion_footwear(cfg: DataConfig) -> RawDataset:
    return relabel(
        load_fashion_mnist(cfg),
        [_FOOTWEAR.index(c) if c in _FOOTWEAR else None for c in FASHION_MNIST_CLASSES],
        list(_FOOTWEAR),
    )


def _mnist_parity(cfg: DataConfig) -> RawDataset:
    return relabel(load_mnist_5k(cfg), [d % 2 for d in range(10)], ["even", "odd"])


_DIGITS_REL = "datasets/data/digits.csv.gz"


def _digits_path(root: str | None) -> Path | None:
    return packaged_file(root, "digits.csv.gz", "sklearn", _DIGITS_REL)


def load_digits(cfg: DataConfig) -> RawDataset:
    """scikit-learn's 1797 8x8 digits (values 0..16, scaled to 0..255); fixed 75/25 train/test split."""
    path = _digits_path(cfg.root)
    if path is None:
        raise DataError(
            f"scikit-learn digits not found: expected sklearn's {_DIGITS_REL} "
            f"({cfg.root or 'in the installed sklearn'}). Install it with `pip install scikit-learn`, "
            "or pass --data-root digits.csv.gz."
        )
    try:
        with gzip.open(path, "rt") as f:
            table = np.loadtxt(f, delimiter=",")
    except (OSError, ValueError, EOFError) as e:
        raise DataError(f"Cannot read '{path}': {e}") from None
    if table.ndim != 2 or table.shape[1] != 65:
        raise DataError(f"'{path}' has shape {table.shape}; expected rows of 64 pixels + label.")
    images = (table[:, :64].clip(0, 16) * 255 / 16).round().astype(np.uint8).reshape(-1, 8, 8)
    return _fixed_test_split(images, table[:, 64].astype(np.int64), [str(d) for d in range(10)], 0.25)


def _present_like(name: str) -> Callable[[str | None], bool]:
    return lambda root: bool(DATASETS.get(name).present and DATASETS.get(name).present(root))


register_dataset(
    DatasetInfo(
        "fashion-mnist-super",
        "Fashion-MNIST grouped into 4 garment kinds: top, trouser or dress, footwear, bag (unbalanced 4:2:3:1)",
        _fashion_super,
        num_classes=4,
        source="as fashion-mnist",
        splits="train 60000 / test 10000",
        present=_present_like("fashion-mnist"),
    )
)
register_dataset(
    DatasetInfo(
        "fashion-mnist-footwear",
        "Fashion-MNIST's 3 footwear classes only: sandal, sneaker, ankle boot (fine-grained)",
        _fashion_footwear,
        num_classes=3,
        source="as fashion-mnist",
        splits="train 18000 / test 3000",
        present=_present_like("fashion-mnist"),
    )
)
register_dataset(
    DatasetInfo(
        "mnist-parity",
        "MNIST-5k digits labelled even / odd (same images and split as mnist-5k)",
        _mnist_parity,
        num_classes=2,
        source="as mnist-5k",
        splits="train 4000 / test 1000 (fixed seed)",
        present=_present_like("mnist-5k"),
    )
)
register_dataset(
    DatasetInfo(
        "digits",
        "scikit-learn digits: 1797 8x8 grey digits, 10 classes; fixed 75/25 train/test split",
        load_digits,
        num_classes=10,
        source="pip install scikit-learn (sklearn/datasets/data/digits.csv.gz) or --data-root FILE",
        splits="train 1347 / test 450 (fixed seed)",
        present=lambda root: _digits_path(root) is not None,
    )
)
