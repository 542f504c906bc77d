"""Image sources (indexable images + integer targets) and the split views the DataLoader reads."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from PIL import Image

from ..errors import DataError
from .images import to_rgb

__all__ = [
    "ArraySource",
    "ConcatSource",
    "ImageFiles",
    "ImageSource",
    "RawDataset",
    "SplitView",
    "Unreadable",
    "collate_skip",
    "collate_unreadable",
]


class ImageSource:
    """Indexable images with integer targets; subclasses implement ``load`` and ``describe``."""

    targets: list[int]

    def __len__(self) -> int:
        return len(self.targets)

    def load(self, i: int) -> Image.Image:
        raise NotImplementedError

    def describe(self, i: int) -> str:
        return f"item {i}"


class ImageFiles(ImageSource):
    """Images read from files."""

    def __init__(self, paths: Sequence[str | Path], targets: Sequence[int]) -> None:
        self.paths = [str(p) for p in paths]
        self.targets = [int(t) for t in targets]

    def load(self, i: int) -> Image.Image:
        with open(self.paths[i], "rb") as f:
            img = Image.open(f)
            img.load()  # read now: a truncated file fails here, inside our error handling
            return img

    def describe(self, i: int) -> str:
        return self.paths[i]


class ArraySource(ImageSource):
    """Images held in a uint8 array of shape (N, H, W) or (N, H, W, C)."""

    def __init__(self, images: np.ndarray, targets: Sequence[int]) -> None:
        if len(images) != len(targets):
            raise DataError(f"{len(images)} images but {len(targets)} labels.")
        self.images = images
        self.targets = [int(t) for t in targets]

    def load(self, i: int) -> Image.Image:
        return Image.fromarray(np.asarray(self.images[i]))


class ConcatSource(ImageSource):
    """Several sources as one: index ``i`` runs through the first source, then the second, ..."""

    def __init__(self, sources: Sequence[ImageSource]) -> None:
        self.sources = list(sources)
        self.starts = np.cumsum([0] + [len(s) for s in self.sources])
        self.targets = [t for s in self.sources for t in s.targets]

    def _locate(self, i: int) -> tuple[ImageSource, int]:
        j = int(np.searchsorted(self.starts, i, side="right")) - 1
        return self.sources[j], i - int(self.starts[j])

    def load(self, i: int) -> Image.Image:
        src, k = self._locate(i)
        return src.load(k)

    def describe(self, i: int) -> str:
        src, k = self._locate(i)
        return src.describe(k)


@dataclass
class RawDataset:
    """What a dataset loader returns: train and test sources, optional official val, class names.

    ``require_all_classes=False`` lets a published few-shot split miss classes in training (VTAB-1k's 1000
    images do not cover all 397 SUN397 classes); the head still has one output per class.
    """

    train: ImageSource
    test: ImageSource
    classes: list[str]
    val: ImageSource | None = None
    require_all_classes: bool = True

    def check(self, name: str) -> None:
        n = len(self.classes)
        for split, src in (("train", self.train), ("test", self.test), ("val", self.val)):
            if src is None:
                continue
            if len(src) == 0:
                raise DataError(f"Dataset '{name}' has an empty {split} split.")
            bad = [t for t in src.targets if not 0 <= t < n]
            if bad:
                raise DataError(f"Dataset '{name}' {split} split has label {bad[0]} outside 0..{n - 1} ({n} classes).")
        empty = sorted(set(range(n)) - set(self.train.targets))
        if empty and self.require_all_classes:
            raise DataError(f"Dataset '{name}': class '{self.classes[empty[0]]}' has no training images.")


class Unreadable(NamedTuple):
    """An image a split skipped: its path (or the source's name for it) and why it could not be read."""

    path: str
    reason: str


class SplitView(torch.utils.data.Dataset):
    """``source[indices]`` with a transform; a corrupt image gives an :class:`Unreadable` (skipped) unless
    ``strict``."""

    def __init__(self, source: ImageSource, indices: Sequence[int], transform: Callable, strict: bool = False) -> None:
        self.source, self.indices, self.transform, self.strict = source, np.asarray(indices), transform, strict

    def __len__(self) -> int:
        return len(self.indices)

    @property
    def targets(self) -> list[int]:
        return [self.source.targets[i] for i in self.indices]

    def __getitem__(self, j: int):
        i = int(self.indices[j])
        try:
            img = to_rgb(self.source.load(i), self.source.describe(i))  # grey and 16-bit -> 8-bit RGB
        except DataError as e:  # a high-depth image outside its accepted range: the message names it
            if self.strict:
                raise
            return Unreadable(self.source.describe(i), str(e))
        except (OSError, ValueError, SyntaxError) as e:
            if self.strict:
                raise DataError(f"Corrupt image {self.source.describe(i)}: {e}") from None
            return Unreadable(self.source.describe(i), str(e) or type(e).__name__)
        return self.transform(img), self.source.targets[i]


def collate_unreadable(batch: list) -> tuple[torch.Tensor, torch.Tensor, list[Unreadable]]:
    """Default collate minus the skipped (corrupt) items; returns (images, labels, the skipped items)."""
    gone = [b for b in batch if isinstance(b, Unreadable)]
    kept = [b for b in batch if not isinstance(b, Unreadable)]
    if not kept:
        return torch.empty(0), torch.empty(0, dtype=torch.long), gone
    x, y = torch.utils.data.default_collate(kept)
    return x, y, gone


def collate_skip(batch: list) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Default collate minus the skipped (corrupt) items; returns (images, labels, n_skipped)."""
    x, y, gone = collate_unreadable(batch)
    return x, y, len(gone)
