"""Folder-based ImageNet derivatives: Tiny-ImageNet (val used as test) and ImageNet-R (fixed split)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..config import DataConfig
from ..errors import DataError
from .base import ImageFiles, RawDataset
from .folders import scan_image_folder
from .locate import dataset_dir, download, files_present, require_files
from .registry import DatasetInfo, register_dataset
from .splits import train_val_indices

__all__ = ["IMAGENET_R_SPLIT_SEED", "class_names", "load_imagenet_r", "load_tiny_imagenet"]

TINY_URL = "http://cs231n.stanford.edu/tiny-imagenet-200.zip"
IMAGENET_R_URL = "https://people.eecs.berkeley.edu/~hendrycks/imagenet-r.tar"
# ImageNet-R has no official split: a fixed seed makes 70/10/20 train/val/test the same for every run and seed.
IMAGENET_R_SPLIT_SEED = 20260314
_TINY_DIR = "tiny-imagenet-200"
_TINY_FILES = ["wnids.txt", "train", "val/val_annotations.txt", "val/images"]


def _fetch_archive(url: str):
    def fetch(root: str) -> None:
        from torchvision.datasets.utils import download_and_extract_archive

        download_and_extract_archive(url, download_root=root)

    return fetch


def class_names(wnids: list[str], words_file: Path) -> list[str]:
    """Readable names from ImageNet's ``words.txt`` ("n01443537<TAB>goldfish, Carassius auratus" -> "goldfish");
    a wnid stays a wnid when it has no entry or its name is not unique."""
    words: dict[str, str] = {}
    if words_file.is_file():
        for line in words_file.read_text().splitlines():
            wnid, _, text = line.partition("\t")
            words[wnid] = text.split(",")[0].strip()
    names = [words.get(w) or w for w in wnids]
    return [n if names.count(n) == 1 else w for n, w in zip(names, wnids)]


def load_tiny_imagenet(cfg: DataConfig) -> RawDataset:
    """train/<wnid>/images/* for training; val/images/* labelled by val/val_annotations.txt as the test split."""
    download(cfg, "tiny-imagenet", _fetch_archive(TINY_URL))
    base = dataset_dir(cfg.root, _TINY_DIR)
    require_files("tiny-imagenet", base, _TINY_FILES, how=f", or add --download to fetch {TINY_URL}")
    wnids = sorted(set(base.joinpath("wnids.txt").read_text().split()))  # ImageFolder's sorted class order
    paths, targets, _ = scan_image_folder(base / "train", wnids)
    index = {w: i for i, w in enumerate(wnids)}
    test_paths, test_targets = [], []
    ann = base / "val" / "val_annotations.txt"
    for n, line in enumerate(ann.read_text().splitlines(), 1):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) < 2 or fields[1] not in index:
            raise DataError(f"'{ann}' line {n}: expected '<file>\\t<wnid from wnids.txt>\\t...', got {line[:80]!r}.")
        test_paths.append(base / "val" / "images" / fields[0])
        test_targets.append(index[fields[1]])
    classes = class_names(wnids, base / "words.txt")
    return RawDataset(ImageFiles(paths, targets), ImageFiles(test_paths, test_targets), classes)


def load_imagenet_r(cfg: DataConfig) -> RawDataset:
    """``imagenet-r/<wnid>/*``; train/ and test/ (and val/) folders are used as given when they exist."""
    download(cfg, "imagenet-r", _fetch_archive(IMAGENET_R_URL))
    base = dataset_dir(cfg.root, "imagenet-r")
    if not base.is_dir():
        require_files("imagenet-r", base, ["<wnid>/<images>"], how=f", or add --download to fetch {IMAGENET_R_URL}")
    if (base / "train").is_dir() and (base / "test").is_dir():
        paths, targets, wnids = scan_image_folder(base / "train")
        t_paths, t_targets, _ = scan_image_folder(base / "test", wnids)
        val = ImageFiles(*scan_image_folder(base / "val", wnids)[:2]) if (base / "val").is_dir() else None
        return RawDataset(ImageFiles(paths, targets), ImageFiles(t_paths, t_targets), wnids, val)
    paths, targets, wnids = scan_image_folder(base)
    rest, test = train_val_indices(targets, 0.2, IMAGENET_R_SPLIT_SEED)
    rest_targets = [targets[i] for i in rest]
    train_pos, val_pos = train_val_indices(rest_targets, 0.125, IMAGENET_R_SPLIT_SEED + 1)  # 10% of all
    train, val = rest[train_pos], rest[val_pos]

    def pick(idx: np.ndarray) -> ImageFiles:
        return ImageFiles([paths[i] for i in idx], [targets[i] for i in idx])

    return RawDataset(pick(train), pick(test), class_names(wnids, base / "words.txt"), pick(val))


register_dataset(
    DatasetInfo(
        "tiny-imagenet",
        "Tiny-ImageNet: 64x64, 200 classes; the official val folder (val_annotations.txt) is the test split (paper)",
        load_tiny_imagenet,
        num_classes=200,
        source=f"--data-root DIR holding {_TINY_DIR}/, or --download",
        splits="train 100000 / test 10000",
        present=files_present(_TINY_DIR, _TINY_FILES),
    )
)
register_dataset(
    DatasetInfo(
        "imagenet-r",
        "ImageNet-R: renditions of 200 ImageNet classes; fixed seed-independent 70/10/20 train/val/test (paper)",
        load_imagenet_r,
        num_classes=200,
        source="--data-root DIR holding imagenet-r/<wnid>/*, or --download",
        splits="train 21000 / val 3000 / test 6000 (fixed)",
        present=lambda root: dataset_dir(root, "imagenet-r").is_dir(),
    )
)
