"""The paper's nine datasets, each read from a tiny fixture written in that dataset's real on-disk format."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from adaptertune.config import DataConfig
from adaptertune.data import DATASETS, build_splits, load_raw
from adaptertune.errors import DataError
from helpers import DATA_CONFIG

PAPER_NINE = [
    "cifar10", "cifar100", "svhn", "pets", "food101", "flowers102", "fgvc-aircraft", "tiny-imagenet", "imagenet-r",
]  # fmt: skip


def save_jpg(path: Path, value: int, size: int = 8) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size, size, 3), value, np.uint8)).save(path)


def pickle_dump(path: Path, obj: dict) -> None:
    with open(path, "wb") as f:
        pickle.dump(obj, f)


def make_cifar10(root: Path) -> tuple[int, int]:
    d = root / "cifar-10-batches-py"
    d.mkdir(parents=True)
    for i in range(1, 6):  # 2 images per batch, labels 0..9 over the 5 batches
        labels = [2 * (i - 1), 2 * (i - 1) + 1]
        pickle_dump(d / f"data_batch_{i}", {"data": np.full((2, 3072), 10 * i, np.uint8), "labels": labels})
    pickle_dump(d / "test_batch", {"data": np.zeros((3, 3072), np.uint8), "labels": [0, 5, 9]})
    pickle_dump(d / "batches.meta", {"label_names": [f"c{i}" for i in range(10)]})
    return 10, 3


def make_cifar100(root: Path) -> tuple[int, int]:
    d = root / "cifar-100-python"
    d.mkdir(parents=True)
    data = np.arange(100 * 3072, dtype=np.int64).reshape(100, 3072) % 256
    pickle_dump(
        d / "train", {"data": data.astype(np.uint8), "fine_labels": list(range(100)), "coarse_labels": [0] * 100}
    )
    pickle_dump(d / "test", {"data": np.zeros((4, 3072), np.uint8), "fine_labels": [0, 1, 98, 99]})
    pickle_dump(d / "meta", {"fine_label_names": [f"f{i}" for i in range(100)], "coarse_label_names": ["x"]})
    return 100, 4


def make_svhn(root: Path) -> tuple[int, int]:
    import scipy.io

    root.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", 20), ("test", 5)):
        y = (np.arange(n) % 10 + 1).reshape(-1, 1)  # 1..10, where 10 means digit 0
        scipy.io.savemat(root / f"{split}_32x32.mat", {"X": np.full((32, 32, 3, n), 7, np.uint8), "y": y})
    return 20, 5


def make_pets(root: Path) -> tuple[int, int]:
    d = root / "oxford-iiit-pet"
    breeds = ["Abyssinian", "american_bulldog", "Bengal"]
    rows = {"trainval": [], "test": []}
    for c, b in enumerate(breeds):
        for i in range(3):
            split = "test" if i == 2 else "trainval"
            rows[split].append(f"{b}_{i + 1} {c + 1} {1 + (b[0].islower())} 1")
            save_jpg(d / "images" / f"{b}_{i + 1}.jpg", 40 * c)
    (d / "annotations").mkdir(parents=True)
    for split, lines in rows.items():
        (d / "annotations" / f"{split}.txt").write_text("\n".join(lines) + "\n")
    return 6, 3


def make_food101(root: Path) -> tuple[int, int]:
    d = root / "food-101"
    meta = {"train": {"apple_pie": [], "ramen": []}, "test": {"apple_pie": [], "ramen": []}}
    for c in ("apple_pie", "ramen"):
        for i in range(3):
            split = "test" if i == 0 else "train"
            meta[split][c].append(f"{c}/{100 + i}")
            save_jpg(d / "images" / c / f"{100 + i}.jpg", 90 if c == "ramen" else 10)
    (d / "meta").mkdir(parents=True)
    for split in meta:
        (d / "meta" / f"{split}.json").write_text(json.dumps(meta[split]))
    (d / "meta" / "classes.txt").write_text("apple_pie\nramen\n")
    return 4, 2


def make_flowers102(root: Path) -> tuple[int, int]:
    import scipy.io

    d = root / "flowers-102"
    labels = np.array([[1, 2, 3, 1, 2, 3, 1, 2, 3]])  # images 1..9, shape (1, N) as in the real file
    for i in range(1, 10):
        save_jpg(d / "jpg" / f"image_{i:05d}.jpg", 20 * i)
    scipy.io.savemat(d / "imagelabels.mat", {"labels": labels})
    scipy.io.savemat(
        d / "setid.mat",
        {"trnid": np.array([[1, 2, 3]]), "valid": np.array([[4, 5, 6]]), "tstid": np.array([[7, 8, 9]])},
    )  # noqa: E501
    return 6, 3  # train + val for training


def make_fgvc_aircraft(root: Path) -> tuple[int, int]:
    d = root / "fgvc-aircraft-2013b" / "data"
    variants = ["707-320", "A300B4", "Cessna 172"]  # names with spaces are allowed
    d.mkdir(parents=True)
    (d / "variants.txt").write_text("\n".join(variants) + "\n")
    rows = {"trainval": [], "test": []}
    for c, v in enumerate(variants):
        for i in range(3):
            image_id = f"{1000000 + 10 * c + i}"
            rows["test" if i == 0 else "trainval"].append(f"{image_id} {v}")
            save_jpg(d / "images" / f"{image_id}.jpg", 60 * c)
    for split, lines in rows.items():
        (d / f"images_variant_{split}.txt").write_text("\n".join(lines) + "\n")
    return 6, 3


def make_tiny_imagenet(root: Path) -> tuple[int, int]:
    d = root / "tiny-imagenet-200"
    wnids = ["n02124075", "n01443537"]  # unsorted, as in the real wnids.txt
    d.mkdir(parents=True)
    (d / "wnids.txt").write_text("\n".join(wnids) + "\n")
    (d / "words.txt").write_text("n01443537\tgoldfish, Carassius auratus\nn02124075\tEgyptian cat\nn0000\tunused\n")
    for w in wnids:
        for i in range(2):
            save_jpg(d / "train" / w / "images" / f"{w}_{i}.JPEG", 50)
        (d / "train" / w / f"{w}_boxes.txt").write_text(f"{w}_0.JPEG\t0\t0\t8\t8\n")
    lines = []
    for i, w in enumerate(wnids * 2):
        save_jpg(d / "val" / "images" / f"val_{i}.JPEG", 50)
        lines.append(f"val_{i}.JPEG\t{w}\t0\t0\t8\t8")
    (d / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")
    return 4, 4


def make_imagenet_r(root: Path) -> tuple[int, int]:
    d = root / "imagenet-r"
    for c, w in enumerate(["n01443537", "n01484850"]):
        for i in range(10):
            save_jpg(d / w / f"art_{i}.jpg", 100 * c)
    return 14, 4  # 70 / 10 / 20 of 20 images


FIXTURES = {
    "cifar10": make_cifar10,
    "cifar100": make_cifar100,
    "svhn": make_svhn,
    "pets": make_pets,
    "food101": make_food101,
    "flowers102": make_flowers102,
    "fgvc-aircraft": make_fgvc_aircraft,
    "tiny-imagenet": make_tiny_imagenet,
    "imagenet-r": make_imagenet_r,
}


@pytest.mark.parametrize("name", PAPER_NINE)
def test_paper_dataset_reads_its_real_format(tmp_path, name):
    n_train, n_test = FIXTURES[name](tmp_path)
    info = DATASETS.get(name)
    assert info.present(str(tmp_path)) and info.num_classes is not None
    raw = load_raw(DataConfig(name=name, root=str(tmp_path)))
    assert (len(raw.train), len(raw.test)) == (n_train, n_test)
    splits = build_splits(DataConfig(name=name, root=str(tmp_path), val_fraction=0.0), DATA_CONFIG, raw)
    for view in (splits.train, splits.test):
        x, y = view[len(view) - 1]
        assert x.shape == (3, 16, 16) and 0 <= y < len(raw.classes)


@pytest.mark.parametrize("name", PAPER_NINE)
def test_missing_root_names_files_and_download(tmp_path, name):
    assert not DATASETS.get(name).present(str(tmp_path))
    with pytest.raises(DataError, match=r"not found: expected .* under .*--download"):
        load_raw(DataConfig(name=name, root=str(tmp_path)))


def test_dataset_folder_itself_works_as_root(tmp_path):
    make_cifar10(tmp_path)
    raw = load_raw(DataConfig(name="cifar10", root=str(tmp_path / "cifar-10-batches-py")))
    assert len(raw.train) == 10


def test_labels_and_names(tmp_path):
    make_cifar10(tmp_path / "c10")
    raw = load_raw(DataConfig(name="cifar10", root=str(tmp_path / "c10")))
    assert raw.classes[5] == "c5" and raw.test.targets == [0, 5, 9] and np.asarray(raw.train.load(9))[0, 0, 0] == 50
    make_svhn(tmp_path / "svhn")
    raw = load_raw(DataConfig(name="svhn", root=str(tmp_path / "svhn")))
    assert raw.train.targets[:10] == [1, 2, 3, 4, 5, 6, 7, 8, 9, 0]  # label 10 is digit 0
    make_pets(tmp_path / "pets")
    raw = load_raw(DataConfig(name="pets", root=str(tmp_path / "pets")))
    assert raw.classes == ["Abyssinian", "American Bulldog", "Bengal"]
    make_flowers102(tmp_path / "fl")
    raw = load_raw(DataConfig(name="flowers102", root=str(tmp_path / "fl")))
    assert raw.train.targets == [0, 1, 2, 0, 1, 2] and raw.classes[0] == "pink primrose"
    make_fgvc_aircraft(tmp_path / "air")
    raw = load_raw(DataConfig(name="fgvc-aircraft", root=str(tmp_path / "air")))
    assert raw.classes[2] == "Cessna 172" and raw.test.targets == [0, 1, 2]
    make_tiny_imagenet(tmp_path / "tiny")
    raw = load_raw(DataConfig(name="tiny-imagenet", root=str(tmp_path / "tiny")))
    assert raw.classes == ["goldfish", "Egyptian cat"]  # sorted wnids, readable names
    assert raw.test.targets == [1, 0, 1, 0] and raw.test.paths[0].endswith("val/images/val_0.JPEG")


def test_imagenet_r_split_is_fixed_and_disjoint(tmp_path):
    make_imagenet_r(tmp_path)
    a = load_raw(DataConfig(name="imagenet-r", root=str(tmp_path), split_seed=0))
    b = load_raw(DataConfig(name="imagenet-r", root=str(tmp_path), split_seed=5))
    assert (len(a.train), len(a.val), len(a.test)) == (14, 2, 4)
    assert a.test.paths == b.test.paths and a.val.paths == b.val.paths  # seed-independent
    assert not set(a.train.paths) & set(a.test.paths) and not set(a.train.paths) & set(a.val.paths)
    assert np.bincount(a.test.targets).tolist() == [2, 2]  # stratified
    splits = build_splits(DataConfig(name="imagenet-r", root=str(tmp_path)), DATA_CONFIG, a)
    assert splits.sizes() == {"train": 14, "val": 2, "test": 4}  # its own val split, not val_fraction


def test_bad_annotation_is_clear_error(tmp_path):
    make_fgvc_aircraft(tmp_path)
    f = tmp_path / "fgvc-aircraft-2013b" / "data" / "images_variant_test.txt"
    f.write_text("1000000 Concorde\n")
    with pytest.raises(DataError, match="variant 'Concorde' is not in variants.txt"):
        load_raw(DataConfig(name="fgvc-aircraft", root=str(tmp_path)))
    make_tiny_imagenet(tmp_path / "t")
    (tmp_path / "t" / "tiny-imagenet-200" / "val" / "val_annotations.txt").write_text("val_0.JPEG\tn99999999\n")
    with pytest.raises(DataError, match="line 1"):
        load_raw(DataConfig(name="tiny-imagenet", root=str(tmp_path / "t")))


def test_download_failure_offline_is_clear_error(tmp_path, monkeypatch):
    import torchvision.datasets.utils as tvu

    def offline(*args, **kwargs):
        raise OSError("network is unreachable")

    monkeypatch.setattr(tvu, "download_and_extract_archive", offline)
    with pytest.raises(DataError, match="Downloading 'tiny-imagenet'.*network is unreachable.*--data-root"):
        load_raw(DataConfig(name="tiny-imagenet", root=str(tmp_path), download=True))
