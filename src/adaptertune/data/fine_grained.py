"""Oxford-IIIT Pets, Food-101, Flowers102 and FGVC-Aircraft, read from their official annotation files.

The layouts are torchvision's (``--download`` fetches them with torchvision); a listed image that is missing
or corrupt is skipped and counted like any corrupt image (an error with ``--strict``).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..config import DataConfig
from ..errors import DataError
from ..extras import require
from .base import ImageFiles, RawDataset
from .locate import dataset_dir, download, files_present, require_files
from .registry import DatasetInfo, register_dataset

__all__ = ["load_fgvc_aircraft", "load_flowers102", "load_food101", "load_pets"]


def _lines(path: Path) -> list[str]:
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"Cannot read '{path}': {e}") from None
    return [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.startswith("#")]


# --- Oxford-IIIT Pets: annotations/{trainval,test}.txt lines "Abyssinian_100 <class 1..37> <species> <breed>"
_PETS_DIR = "oxford-iiit-pet"
_PETS_FILES = ["annotations/trainval.txt", "annotations/test.txt", "images"]


def load_pets(cfg: DataConfig) -> RawDataset:
    from torchvision.datasets import OxfordIIITPet

    download(cfg, "pets", lambda r: OxfordIIITPet(r, split="trainval", download=True))
    base = dataset_dir(cfg.root, _PETS_DIR)
    require_files("pets", base, _PETS_FILES)
    names: dict[int, str] = {}

    def split(file: str) -> ImageFiles:
        paths, targets = [], []
        for n, line in enumerate(_lines(base / "annotations" / file), 1):
            parts = line.split()
            if len(parts) < 2 or not parts[1].isdigit():
                raise DataError(f"'{base / 'annotations' / file}' line {n}: expected '<image_id> <class_id> ...'.")
            label = int(parts[1]) - 1
            # torchvision's class names: "american_bulldog_12" -> "American Bulldog"
            names.setdefault(label, " ".join(p.title() for p in parts[0].rsplit("_", 1)[0].split("_")))
            paths.append(base / "images" / f"{parts[0]}.jpg")
            targets.append(label)
        return ImageFiles(paths, targets)

    train, test = split("trainval.txt"), split("test.txt")
    return RawDataset(train, test, [names.get(i, f"class_{i + 1}") for i in range(max(names) + 1)])


# --- Food-101: meta/{train,test}.json = {class: ["class/image_id", ...]}, images/<class>/<id>.jpg
_FOOD_DIR = "food-101"
_FOOD_FILES = ["meta/train.json", "meta/test.json", "images"]


def load_food101(cfg: DataConfig) -> RawDataset:
    from torchvision.datasets import Food101

    download(cfg, "food101", lambda r: Food101(r, split="train", download=True))
    base = dataset_dir(cfg.root, _FOOD_DIR)
    require_files("food101", base, _FOOD_FILES)
    meta = {}
    for split in ("train", "test"):
        try:
            meta[split] = json.loads((base / "meta" / f"{split}.json").read_text())
        except (OSError, ValueError) as e:
            raise DataError(f"Cannot read '{base / 'meta' / split}.json': {e}") from None
    classes = sorted(meta["train"])
    unknown = sorted(set(meta["test"]) - set(classes))
    if unknown:
        raise DataError(f"Food-101 test split has class '{unknown[0]}' that the training split does not have.")
    index = {c: i for i, c in enumerate(classes)}

    def files(split: str) -> ImageFiles:
        pairs = [(base / "images" / f"{rel}.jpg", index[c]) for c in sorted(meta[split]) for rel in meta[split][c]]
        return ImageFiles([p for p, _ in pairs], [t for _, t in pairs])

    return RawDataset(files("train"), files("test"), classes)


# --- Flowers102: jpg/image_%05d.jpg, imagelabels.mat (labels 1..102), setid.mat (trnid / valid / tstid)
_FLOWERS_DIR = "flowers-102"
_FLOWERS_FILES = ["jpg", "imagelabels.mat", "setid.mat"]


def load_flowers102(cfg: DataConfig) -> RawDataset:
    """Train + val (1020 + 1020 images) for training, the official 6149-image test split for testing; or VPT's
    json splits (``data.split`` ``vpt`` / ``vpt-trainval``, see :mod:`.fgvc`)."""
    from torchvision.datasets import Flowers102

    if cfg.split not in (None, "official"):
        from .fgvc import find_dataset_dir, load_vpt_json

        base = find_dataset_dir(cfg.root, [_FLOWERS_DIR, "OxfordFlower"], "train.json")
        return load_vpt_json("flowers102", base, base, cfg.split)

    download(cfg, "flowers102", lambda r: Flowers102(r, split="train", download=True))
    base = dataset_dir(cfg.root, _FLOWERS_DIR)
    require_files("flowers102", base, _FLOWERS_FILES)
    io = require("scipy.io", "Reading Flowers102's .mat files")
    try:
        labels = io.loadmat(str(base / "imagelabels.mat"))["labels"].reshape(-1).astype(np.int64)
        setid = io.loadmat(str(base / "setid.mat"))
        ids = {k: setid[k].reshape(-1).astype(np.int64) for k in ("trnid", "valid", "tstid")}
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise DataError(f"Cannot read Flowers102 labels under '{base}': {type(e).__name__}: {e}") from None

    def files(image_ids: np.ndarray) -> ImageFiles:
        bad = [i for i in image_ids if not 1 <= i <= len(labels)]
        if bad:
            raise DataError(f"setid.mat lists image {bad[0]} but imagelabels.mat has {len(labels)} labels.")
        return ImageFiles([base / "jpg" / f"image_{i:05d}.jpg" for i in image_ids], labels[image_ids - 1] - 1)

    n_classes = int(labels.max())
    names = list(getattr(Flowers102, "classes", []))
    classes = names[:n_classes] if len(names) >= n_classes else [f"flower_{i + 1}" for i in range(n_classes)]
    return RawDataset(files(np.concatenate([ids["trnid"], ids["valid"]])), files(ids["tstid"]), classes)


# --- FGVC-Aircraft (variant): data/variants.txt, data/images_variant_{trainval,test}.txt "<id> <variant>"
_AIRCRAFT_DIR = "fgvc-aircraft-2013b"
_AIRCRAFT_FILES = [
    "data/variants.txt",
    "data/images_variant_trainval.txt",
    "data/images_variant_test.txt",
    "data/images",
]


def load_fgvc_aircraft(cfg: DataConfig) -> RawDataset:
    from torchvision.datasets import FGVCAircraft

    download(cfg, "fgvc-aircraft", lambda r: FGVCAircraft(r, split="trainval", download=True))
    base = dataset_dir(cfg.root, _AIRCRAFT_DIR)
    require_files("fgvc-aircraft", base, _AIRCRAFT_FILES)
    classes = _lines(base / "data" / "variants.txt")
    index = {c: i for i, c in enumerate(classes)}

    def files(split: str) -> ImageFiles:
        path = base / "data" / f"images_variant_{split}.txt"
        paths, targets = [], []
        for n, line in enumerate(_lines(path), 1):
            image_id, _, variant = line.partition(" ")
            if variant not in index:
                raise DataError(f"'{path}' line {n}: variant '{variant}' is not in variants.txt.")
            paths.append(base / "data" / "images" / f"{image_id}.jpg")
            targets.append(index[variant])
        return ImageFiles(paths, targets)

    return RawDataset(files("trainval"), files("test"), classes)


for _info in (
    DatasetInfo(
        "pets",
        "Oxford-IIIT Pets: 37 cat and dog breeds; trainval -> test (paper)",
        load_pets,
        num_classes=37,
        source=f"--data-root DIR holding {_PETS_DIR}/ (images/, annotations/), or --download",
        splits="trainval 3680 / test 3669",
        present=files_present(_PETS_DIR, _PETS_FILES),
    ),
    DatasetInfo(
        "food101",
        "Food-101: 101 dishes (paper)",
        load_food101,
        num_classes=101,
        source=f"--data-root DIR holding {_FOOD_DIR}/ (images/, meta/), or --download",
        splits="train 75750 / test 25250",
        present=files_present(_FOOD_DIR, _FOOD_FILES),
    ),
    DatasetInfo(
        "flowers102",
        "Oxford Flowers102: 102 flower species; train+val for training, official test (paper)",
        load_flowers102,
        num_classes=102,
        source=f"--data-root DIR holding {_FLOWERS_DIR}/ (jpg/, imagelabels.mat, setid.mat), or --download",
        splits="train+val 2040 / test 6149",
        present=files_present(_FLOWERS_DIR, _FLOWERS_FILES),
        split_choices=("official", "vpt", "vpt-trainval"),
    ),
    DatasetInfo(
        "fgvc-aircraft",
        "FGVC-Aircraft: 100 aircraft variants; trainval -> test (paper)",
        load_fgvc_aircraft,
        num_classes=100,
        source=f"--data-root DIR holding {_AIRCRAFT_DIR}/ (data/), or --download",
        splits="trainval 6667 / test 3333",
        present=files_present(_AIRCRAFT_DIR, _AIRCRAFT_FILES),
    ),
):
    register_dataset(_info)
