"""ImageFolder datasets: ``root/train/<class>/*`` + ``root/test/<class>/*`` (or ``val/``), or class folders only."""

from __future__ import annotations

from pathlib import Path

from torchvision.datasets.folder import IMG_EXTENSIONS

from ..config import DataConfig
from ..errors import DataError
from .base import ImageFiles, RawDataset
from .registry import DatasetInfo, register_dataset
from .splits import train_val_indices

__all__ = ["load_imagefolder", "scan_image_folder"]

# A fixed seed: the test split of a folder without a test/ folder never depends on any run's seeds.
FOLDER_TEST_SEED = 20260314
FOLDER_TEST_FRACTION = 0.2


def scan_image_folder(root: Path, classes: list[str] | None = None) -> tuple[list[Path], list[int], list[str]]:
    """Images under ``root/<class>/`` (sorted); with ``classes`` given, labels follow that list."""
    found = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not found:
        raise DataError(f"'{root}' has no class folders; expected {root}/<class_name>/<image files>.")
    if classes is None:
        classes = found
    else:
        unknown = sorted(set(found) - set(classes))
        if unknown:
            raise DataError(f"'{root}' has class folder '{unknown[0]}' that the training split does not have.")
    index = {c: i for i, c in enumerate(classes)}
    paths, targets = [], []
    for c in found:
        files = sorted(p for p in (root / c).rglob("*") if p.is_file() and p.suffix.lower() in IMG_EXTENSIONS)
        if not files:
            raise DataError(
                f"Class folder '{root / c}' is empty; expected image files ({', '.join(IMG_EXTENSIONS[:4])}, ...)."
            )
        paths += files
        targets += [index[c]] * len(files)
    return paths, targets, classes


def load_imagefolder(cfg: DataConfig) -> RawDataset:
    if cfg.root is None:
        raise DataError("Dataset 'imagefolder' needs --data-root DIR (DIR/train/<class>/*, DIR/test/<class>/*).")
    root = Path(cfg.root).expanduser()
    if not root.is_dir():
        raise DataError(
            f"Data root '{cfg.root}' does not exist; expected a folder DIR/train/<class>/*, DIR/test/<class>/*."
        )
    if (root / "train").is_dir():
        paths, targets, classes = scan_image_folder(root / "train")
        test_dir = next((root / d for d in ("test", "val") if (root / d).is_dir()), None)
        if test_dir is None:
            raise DataError(f"'{root}' has train/ but no test/ or val/ folder for evaluation.")
        tpaths, ttargets, _ = scan_image_folder(test_dir, classes)
        return RawDataset(ImageFiles(paths, targets), ImageFiles(tpaths, ttargets), classes)
    paths, targets, classes = scan_image_folder(root)
    train_idx, test_idx = train_val_indices(targets, FOLDER_TEST_FRACTION, FOLDER_TEST_SEED)
    return RawDataset(
        ImageFiles([paths[i] for i in train_idx], [targets[i] for i in train_idx]),
        ImageFiles([paths[i] for i in test_idx], [targets[i] for i in test_idx]),
        classes,
    )


register_dataset(
    DatasetInfo(
        "imagefolder",
        "any folder of images: DIR/train/<class>/* and DIR/test/<class>/* (or class folders only: fixed 80/20 split)",
        load_imagefolder,
        source="--data-root DIR",
        splits="from the folders",
        present=lambda root: root is not None and Path(root).is_dir(),
    )
)
