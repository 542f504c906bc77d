"""Derived offline tasks: relabelled and class-subset views of Fashion-MNIST and MNIST-5k, and sklearn digits."""

from __future__ import annotations

import gzip

import numpy as np
import pytest

from adaptertune.config import DataConfig
from adaptertune.data import DATASETS, load_raw
from adaptertune.data.derived import FASHION_SUPERCLASSES
from adaptertune.data.offline import FASHION_MNIST_CLASSES
from adaptertune.errors import DataError
from helpers import make_fashion_mnist, write_mnist_csv


def test_superclasses_cover_every_fashion_class_once():
    members = [c for group in FASHION_SUPERCLASSES.values() for c in group]
    assert sorted(members) == sorted(FASHION_MNIST_CLASSES)


def test_fashion_superclasses_and_footwear(tmp_path):
    root = str(make_fashion_mnist(tmp_path, n_train=40, n_test=20))
    base = load_raw(DataConfig(name="fashion-mnist", root=root))
    sup = load_raw(DataConfig(name="fashion-mnist-super", root=root))
    assert sup.classes == ["top", "trouser or dress", "footwear", "bag"] and len(sup.train) == len(base.train)
    for i in range(len(base.train)):  # same image, its garment kind as label
        name = FASHION_MNIST_CLASSES[base.train.targets[i]]
        assert name in FASHION_SUPERCLASSES[sup.classes[sup.train.targets[i]]]
        assert np.array_equal(np.asarray(base.train.load(i)), np.asarray(sup.train.load(i)))
    foot = load_raw(DataConfig(name="fashion-mnist-footwear", root=root))
    assert foot.classes == ["Sandal", "Sneaker", "Ankle boot"] and len(foot.train) == 12 and len(foot.test) == 6
    assert np.bincount(foot.train.targets).tolist() == [4, 4, 4]


def test_mnist_parity(tmp_path):
    path = str(write_mnist_csv(tmp_path / "mnist_5k.csv.gz"))
    base = load_raw(DataConfig(name="mnist-5k", root=path))
    par = load_raw(DataConfig(name="mnist-parity", root=path))
    assert par.classes == ["even", "odd"] and par.train.targets == [t % 2 for t in base.train.targets]


def test_digits_from_file_and_missing_file(tmp_path):
    labels = np.repeat(np.arange(10), 4)
    table = np.column_stack([np.repeat(labels[:, None], 64, axis=1), labels])
    path = tmp_path / "digits.csv.gz"
    with gzip.open(path, "wt") as f:
        np.savetxt(f, table, fmt="%d", delimiter=",")
    raw = load_raw(DataConfig(name="digits", root=str(path)))
    assert (len(raw.train), len(raw.test)) == (30, 10) and np.asarray(raw.train.load(0)).shape == (8, 8)
    with pytest.raises(DataError, match="pip install scikit-learn"):
        load_raw(DataConfig(name="digits", root=str(tmp_path / "nope.csv.gz")))


def test_derived_tasks_are_registered_with_class_counts():
    for name, n in (("fashion-mnist-super", 4), ("fashion-mnist-footwear", 3), ("mnist-parity", 2), ("digits", 10)):
        assert DATASETS.get(name).num_classes == n
