"""Hugging Face ``datasets``: a ``save_to_disk`` folder, or a hub name with ``--download`` (needs internet).

``datasets`` is the optional extra ``hf`` and is imported only here, only when this loader runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ..config import DataConfig
from ..errors import DataError
from ..extras import require
from .base import ImageSource, RawDataset
from .folders import FOLDER_TEST_FRACTION, FOLDER_TEST_SEED
from .registry import DatasetInfo, register_dataset
from .splits import train_val_indices

__all__ = ["HFImages", "load_hf"]

_IMAGE_NAMES = ("image", "img", "pixel_values", "picture")
_LABEL_NAMES = ("label", "labels", "fine_label", "class", "target")
_VAL_NAMES = ("validation", "val", "valid")


class HFImages(ImageSource):
    """Rows ``indices`` of a ``datasets.Dataset``: the image column decoded to PIL, labels as ints."""

    def __init__(self, ds: Any, image_col: str, targets: list[int], indices: np.ndarray | None = None) -> None:
        self.ds, self.image_col = ds, image_col
        self.indices = np.arange(len(ds)) if indices is None else np.asarray(indices)
        self.targets = [targets[i] for i in self.indices]

    def load(self, i: int) -> Image.Image:
        img = self.ds[int(self.indices[i])][self.image_col]
        if isinstance(img, Image.Image):
            return img
        if isinstance(img, dict) and img.get("path"):  # an undecoded Image feature
            return Image.open(img["path"])
        return Image.fromarray(np.asarray(img, dtype=np.uint8))

    def describe(self, i: int) -> str:
        return f"row {int(self.indices[i])}"


def _columns(ds: Any) -> tuple[str, str, list[str] | None]:
    """(image column, label column, ClassLabel names or None), found by feature type, else by usual names."""
    import datasets

    feats = ds.features
    image = next((c for c, f in feats.items() if isinstance(f, datasets.Image)), None)
    image = image or next((c for c in _IMAGE_NAMES if c in feats), None)
    label = next((c for c, f in feats.items() if isinstance(f, datasets.ClassLabel)), None)
    label = label or next((c for c in _LABEL_NAMES if c in feats), None)
    if image is None or label is None:
        raise DataError(
            f"Cannot find the image and label columns among {list(feats)}; expected an Image feature (or a column "
            f"named {'/'.join(_IMAGE_NAMES)}) and a ClassLabel (or a column named {'/'.join(_LABEL_NAMES)})."
        )
    names = feats[label].names if isinstance(feats[label], datasets.ClassLabel) else None
    return image, label, names


def _open(cfg: DataConfig) -> Any:
    datasets = require("datasets", "Dataset 'hf'")
    if cfg.root is None:
        raise DataError(
            "Dataset 'hf' needs --data-root: a datasets save_to_disk folder (or a hub name with --download)."
        )
    root = Path(cfg.root).expanduser()
    if root.is_dir():
        try:
            return datasets.load_from_disk(str(root))
        except (FileNotFoundError, ValueError) as e:
            raise DataError(
                f"'{root}' is not a datasets save_to_disk folder: {str(e).splitlines()[0][:200]}"
            ) from None
    if not cfg.download:
        raise DataError(
            f"'{cfg.root}' is not a folder. For a save_to_disk folder give its path; for a hub dataset add "
            "--download (needs internet)."
        )
    try:
        return datasets.load_dataset(cfg.root)
    except Exception as e:  # offline, unknown name, ...
        raise DataError(
            f"Cannot load hub dataset '{cfg.root}': {type(e).__name__}: {str(e).splitlines()[0][:200]}"
        ) from None


def load_hf(cfg: DataConfig) -> RawDataset:
    loaded = _open(cfg)
    if hasattr(loaded, "keys"):  # DatasetDict
        parts = dict(loaded.items())
    else:
        parts = {"train": loaded}
    if "train" not in parts:
        raise DataError(f"'{cfg.root}' has splits {sorted(parts)}; a 'train' split is needed.")
    image_col, label_col, names = _columns(parts["train"])
    if names is None:
        values = sorted({v for ds in parts.values() for v in ds[label_col]})
        names = [str(v) for v in values]
        code = {v: i for i, v in enumerate(values)}
    else:
        code = None

    def wrap(ds: Any, indices: np.ndarray | None = None) -> HFImages:
        raw = ds[label_col]
        targets = [code[v] for v in raw] if code is not None else [int(v) for v in raw]
        return HFImages(ds, image_col, targets, indices)

    val_name = next((n for n in _VAL_NAMES if n in parts), None)
    val = wrap(parts[val_name]) if val_name else None
    if "test" in parts:
        return RawDataset(wrap(parts["train"]), wrap(parts["test"]), list(names), val)
    full = wrap(parts["train"])
    train_idx, test_idx = train_val_indices(full.targets, FOLDER_TEST_FRACTION, FOLDER_TEST_SEED)
    return RawDataset(wrap(parts["train"], train_idx), wrap(parts["train"], test_idx), list(names), val)


register_dataset(
    DatasetInfo(
        "hf",
        "a Hugging Face datasets save_to_disk folder (or hub name with --download); needs the 'hf' extra",
        load_hf,
        source="--data-root DIR (datasets.save_to_disk)",
        splits="from the dataset (no test split: fixed 80/20)",
        present=lambda root: root is not None and Path(root).is_dir(),
    )
)
