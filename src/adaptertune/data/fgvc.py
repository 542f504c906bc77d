"""The FGVC benchmark of the PETL literature (VPT, Jia et al. 2022): CUB-200-2011, NABirds, Oxford Flowers,
Stanford Dogs and Stanford Cars, each in the layout its authors distribute, plus VPT's json splits.

``data.split``:

* ``official`` (default): the dataset's own train/test lists (below).
* ``vpt``: VPT's released ``train.json`` / ``val.json`` / ``test.json`` (``{"relative/path": class_id}``; ``val``
  is 10% carved out of the official training set): train on ``train.json``, select on ``val.json``, test on
  ``test.json``, as VPT's code does.
* ``vpt-trainval``: train on ``train.json`` + ``val.json``, test on ``test.json`` (no validation).

VPT puts the json files in each dataset's folder; their paths are relative to ``images/`` (CUB, NABirds),
``Images/`` (Stanford Dogs) or the folder itself (Oxford Flowers, Stanford Cars). Oxford Flowers keeps its
registry name ``flowers102`` (:mod:`.fine_grained`) and reads VPT's json through :func:`load_vpt_json`.

Official layouts (``--data-root`` is the dataset folder itself or the folder holding it):

* ``cub200``: ``CUB_200_2011/`` with ``images/``, ``images.txt`` (``id path``), ``image_class_labels.txt``
  (``id class``), ``train_test_split.txt`` (``id 1|0``), ``classes.txt`` (``class name``). 5994 / 5794, 200 classes.
* ``nabirds``: ``nabirds/``, the same five files (ids are UUIDs; the 555 leaf classes that label images, taken
  in id order). 23929 / 24633.
* ``stanford-dogs``: ``Stanford-dogs/`` with ``Images/<synset>-<breed>/*.jpg`` and ``train_list.mat`` /
  ``test_list.mat`` (``file_list``, ``labels`` 1..120) as ``lists.tar`` unpacks. 12000 / 8580.
* ``stanford-cars``: ``Stanford-cars/`` with ``car_ims/`` and ``cars_annos.mat`` (``annotations``:
  ``relative_im_path``, ``class`` 1..196, ``test`` 0|1; ``class_names``), the all-images release VPT uses.
  8144 / 8041.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path

import numpy as np

from ..config import DataConfig
from ..errors import DataError
from ..extras import require
from .base import ImageFiles, RawDataset
from .registry import DatasetInfo, register_dataset

__all__ = ["FGVC_SPLITS", "VPT_JSON_FILES", "find_dataset_dir", "load_vpt_json"]

FGVC_SPLITS = ("official", "vpt", "vpt-trainval")
VPT_JSON_FILES = ("train.json", "val.json", "test.json")


def find_dataset_dir(root: str | None, folders: Sequence[str], marker: str) -> Path:
    """The dataset's folder: ``root`` itself when it holds ``marker``, else ``root/<folder>`` for the first of
    ``folders`` that exists (the first one when none does, so that the error names it)."""
    base = Path(root or "data").expanduser()
    if (base / marker).exists():
        return base
    return next((base / f for f in folders if (base / f).is_dir()), base / folders[0])


def _require(name: str, base: Path, files: Sequence[str], split: str) -> None:
    missing = [f for f in files if not (base / f).exists()]
    if missing:
        raise DataError(
            f"Dataset '{name}' (split '{split}') not found: '{base}' lacks {', '.join(missing)}. Pass --data-root "
            "DIR (the dataset folder, or the folder holding it); see adaptertune.data.fgvc for the layouts."
        )


def _read(path: Path) -> list[list[str]]:
    try:
        return [ln.split(maxsplit=1) for ln in path.read_text().splitlines() if ln.strip()]
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"Cannot read '{path}': {e}") from None


def _files(pairs: list[tuple[Path, int]], name: str) -> ImageFiles:
    missing = [p for p, _ in pairs if not p.is_file()]
    if missing:
        raise DataError(
            f"Dataset '{name}': image '{missing[0]}' does not exist "
            f"({len(missing)} of {len(pairs)} listed are missing)."
        )
    return ImageFiles([p for p, _ in pairs], [t for _, t in pairs])


def load_vpt_json(
    name: str, base: Path, image_dir: Path, split: str, class_names: dict[int, str] | None = None
) -> RawDataset:
    """VPT's ``train.json`` / ``val.json`` / ``test.json`` under ``base``; image paths relative to ``image_dir``.

    Class ids (any integers) map to 0..C-1 in sorted order over the three files, so the splits agree. The
    classes are named from ``class_names`` only when it names every id (the json files do not say whether their
    ids count from 0 or 1); otherwise by their ids.
    """
    _require(name, base, VPT_JSON_FILES, split)
    splits: dict[str, dict[str, int]] = {}
    for f in VPT_JSON_FILES:
        try:
            data = json.loads((base / f).read_text())
        except (OSError, ValueError) as e:
            raise DataError(f"Cannot read '{base / f}': {e}") from None
        if not isinstance(data, dict) or not all(isinstance(v, int) for v in data.values()):
            raise DataError(f"'{base / f}' must map image paths to integer class ids ({{\"path\": id}}).")
        splits[f.removesuffix(".json")] = data
    ids = sorted({c for d in splits.values() for c in d.values()})
    index = {c: i for i, c in enumerate(ids)}
    names = class_names if class_names and set(ids) <= set(class_names) else {}

    def files(*keys: str) -> ImageFiles:
        return _files([(image_dir / p, index[c]) for k in keys for p, c in splits[k].items()], name)

    classes = [names.get(c, str(c)) for c in ids]
    if split == "vpt":
        return RawDataset(files("train"), files("test"), classes, files("val"))
    return RawDataset(files("train", "val"), files("test"), classes)


# --- CUB-200-2011 and NABirds: images.txt, image_class_labels.txt, train_test_split.txt, classes.txt
_CUB_FILES = ["images.txt", "image_class_labels.txt", "train_test_split.txt", "classes.txt", "images"]


def _class_names(path: Path) -> dict[int, str]:
    names = {}
    for n, parts in enumerate(_read(path), 1):
        if len(parts) != 2 or not parts[0].isdigit():
            raise DataError(f"'{path}' line {n}: expected '<class id> <name>'.")
        names[int(parts[0])] = parts[1]
    return names


def _load_cub_style(cfg: DataConfig, name: str, folders: Sequence[str], tidy: Callable[[str], str]) -> RawDataset:
    base = find_dataset_dir(cfg.root, folders, "images.txt" if cfg.split in (None, "official") else "train.json")
    split = cfg.split or "official"
    names = {}
    if (base / "classes.txt").is_file():
        names = {k: tidy(v) for k, v in _class_names(base / "classes.txt").items()}
    if split != "official":
        return load_vpt_json(name, base, base / "images", split, names)
    _require(name, base, _CUB_FILES, split)
    tables = {}
    for f in ("images.txt", "image_class_labels.txt", "train_test_split.txt"):
        rows = _read(base / f)
        bad = next((n for n, r in enumerate(rows, 1) if len(r) != 2), None)
        if bad is not None:
            raise DataError(f"'{base / f}' line {bad}: expected '<image id> <value>'.")
        tables[f] = dict(rows)
    paths, labels, is_train = tables["images.txt"], tables["image_class_labels.txt"], tables["train_test_split.txt"]
    unlabeled = [i for i in paths if i not in labels or i not in is_train]
    if unlabeled:
        raise DataError(f"Dataset '{name}': image id {unlabeled[0]} has no class or no train/test entry.")
    ids = sorted({int(c) for c in labels.values()})  # NABirds labels 555 of its 1011 hierarchy classes
    index = {c: i for i, c in enumerate(ids)}

    def files(flag: str) -> ImageFiles:
        chosen = [i for i in paths if is_train[i].strip() == flag]
        return _files([(base / "images" / paths[i].strip(), index[int(labels[i])]) for i in chosen], name)

    return RawDataset(files("1"), files("0"), [names.get(c, str(c)) for c in ids])


def _cub_name(raw: str) -> str:  # "001.Black_footed_Albatross" -> "Black footed Albatross"
    return raw.split(".", 1)[-1].replace("_", " ")


# --- Stanford Dogs: Images/<synset>-<breed>/, train_list.mat / test_list.mat (file_list, labels 1..120)
def _loadmat(path: Path) -> dict:
    io = require("scipy.io", f"Reading '{path.name}'")
    try:
        return io.loadmat(str(path), squeeze_me=True)
    except (OSError, ValueError, TypeError) as e:
        raise DataError(f"Cannot read '{path}': {type(e).__name__}: {e}") from None


def load_stanford_dogs(cfg: DataConfig) -> RawDataset:
    split = cfg.split or "official"
    base = find_dataset_dir(cfg.root, ["Stanford-dogs", "stanford-dogs", "StanfordDogs"], "Images")
    if split != "official":
        return load_vpt_json("stanford-dogs", base, base / "Images", split)
    _require("stanford-dogs", base, ["Images", "train_list.mat", "test_list.mat"], split)
    lists = {}
    for s in ("train", "test"):
        mat = _loadmat(base / f"{s}_list.mat")
        try:
            lists[s] = [str(f) for f in np.atleast_1d(mat["file_list"])], np.atleast_1d(mat["labels"]).astype(int)
        except KeyError as e:
            raise DataError(f"'{base / f'{s}_list.mat'}' has no {e} entry (expected file_list and labels).") from None
    breeds: dict[int, str] = {}
    for files, labels in lists.values():
        for f, y in zip(files, labels, strict=True):
            breeds.setdefault(int(y), f.split("/", 1)[0].split("-", 1)[-1].replace("_", " "))
    n = max(breeds)

    def source(s: str) -> ImageFiles:
        files, labels = lists[s]
        return _files([(base / "Images" / f, int(y) - 1) for f, y in zip(files, labels, strict=True)], "stanford-dogs")

    return RawDataset(source("train"), source("test"), [breeds.get(i + 1, str(i + 1)) for i in range(n)])


# --- Stanford Cars (all-images release): car_ims/, cars_annos.mat
def load_stanford_cars(cfg: DataConfig) -> RawDataset:
    split = cfg.split or "official"
    base = find_dataset_dir(cfg.root, ["Stanford-cars", "stanford-cars", "StanfordCars"], "cars_annos.mat")
    mat_names: dict[int, str] = {}
    if (base / "cars_annos.mat").is_file():
        mat = _loadmat(base / "cars_annos.mat")
        mat_names = {i + 1: str(c) for i, c in enumerate(np.atleast_1d(mat.get("class_names", [])))}
    if split != "official":
        return load_vpt_json("stanford-cars", base, base, split, mat_names)
    _require("stanford-cars", base, ["car_ims", "cars_annos.mat"], split)
    try:
        annos = np.atleast_1d(mat["annotations"])
        rows = [(str(a["relative_im_path"]), int(a["class"]), int(a["test"])) for a in annos]
    except (KeyError, ValueError, IndexError) as e:
        raise DataError(
            f"'{base / 'cars_annos.mat'}' is not the all-images release (annotations with relative_im_path, "
            f"class, test): {type(e).__name__}: {e}"
        ) from None
    n = max(c for _, c, _ in rows)

    def source(test: int) -> ImageFiles:
        return _files([(base / p, c - 1) for p, c, t in rows if t == test], "stanford-cars")

    return RawDataset(source(0), source(1), [mat_names.get(i + 1, str(i + 1)) for i in range(n)])


def _fgvc_info(name, about, loader, n, folder, marker, splits, source) -> DatasetInfo:
    """A FGVC dataset's registry entry: present when ``marker`` exists in ``root`` or ``root/<folder>``."""

    def present(root) -> bool:
        return (find_dataset_dir(root, [folder], marker) / marker).exists()

    return DatasetInfo(
        name, about, loader, num_classes=n, source=source, splits=splits, present=present, split_choices=FGVC_SPLITS
    )


_VPT = "VPT's *.json alongside"
for _info in (
    _fgvc_info(
        "cub200",
        "CUB-200-2011: 200 bird species; official train -> test, or VPT's json splits (FGVC)",
        partial(_load_cub_style, name="cub200", folders=["CUB_200_2011"], tidy=_cub_name),
        200,
        "CUB_200_2011",
        "images.txt",
        "train 5994 / test 5794; vpt: train 5394 / val 600 / test 5794",
        f"--data-root DIR holding CUB_200_2011/ (images/, images.txt, ...; {_VPT})",
    ),
    _fgvc_info(
        "nabirds",
        "NABirds: 555 North American bird classes; official train -> test, or VPT's json splits (FGVC)",
        partial(_load_cub_style, name="nabirds", folders=["nabirds"], tidy=str),
        555,
        "nabirds",
        "images.txt",
        "train 23929 / test 24633; vpt: train 21536 / val 2393 / test 24633",
        f"--data-root DIR holding nabirds/ (images/, images.txt, ...; {_VPT})",
    ),
    _fgvc_info(
        "stanford-dogs",
        "Stanford Dogs: 120 breeds; official train -> test, or VPT's json splits (FGVC)",
        load_stanford_dogs,
        120,
        "Stanford-dogs",
        "train_list.mat",
        "train 12000 / test 8580; vpt: train 10800 / val 1200 / test 8580",
        "--data-root DIR holding Stanford-dogs/ (Images/, train_list.mat, test_list.mat; VPT's *.json)",
    ),
    _fgvc_info(
        "stanford-cars",
        "Stanford Cars: 196 car models; official train -> test, or VPT's json splits (FGVC)",
        load_stanford_cars,
        196,
        "Stanford-cars",
        "car_ims",
        "train 8144 / test 8041; vpt: train 7329 / val 815 / test 8041",
        f"--data-root DIR holding Stanford-cars/ (car_ims/, cars_annos.mat; {_VPT})",
    ),
):
    register_dataset(_info)
