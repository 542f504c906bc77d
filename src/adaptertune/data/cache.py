"""``data.cache``: a dataset read from image files, decoded and resized once into a uint8 array on disk.

Every image of a file-backed source (:class:`~.base.ImageFiles`: ImageFolder, CSV file lists, the FGVC and
PETL folders) is decoded, converted to 8-bit RGB and resized as the evaluation transform's first step does:
with ``data.resize=crop`` the shorter side to ``floor(size / crop_pct)`` (torchvision ``Resize``, the
backbone's interpolation) and then the centred square of that side is kept; with ``squash`` straight to
``size x size``. The array (``N x S x S x 3``) is written once to ``DIR/<key>.npy`` (atomically, under a
file lock, so the runs of a sweep build it once) and memory-mapped by every later run. ``key`` hashes the
side, the interpolation, and each file's path, size and modification time: an edited file makes a new cache.

What changes against reading the files (stated in the README, and the run's protocol records
``pre_resized``): evaluation reads the same resized pixels, centre-cropped from the square (a 1-pixel shift
at most from the uncached crop of a non-square image); training's random-resized crop samples inside the
centred square and resamples from the resized image, not the original. A cached split is an array split,
so it is transformed in batches on the training device (``data.batched``), not decoded in workers.

A file that cannot be decoded is recorded in the cache's ``.json`` beside the array: it stays skipped and
counted as corrupt (or is an error with ``data.strict``), as without the cache; such a split runs through
the per-image path.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ..atomic import atomic_write_stream, atomic_write_text, ensure_output_dir
from ..errors import ConfigError, DataError, OutputError
from .base import ArraySource, ImageFiles, ImageSource, RawDataset
from .images import read_image

__all__ = ["CachedImages", "cache_raw", "cache_side"]
_logger = logging.getLogger(__name__)


class CachedImages(ArraySource):
    """A file-backed source served from its pre-resized array; ``bad`` maps an index to why it failed."""

    def __init__(self, images: np.ndarray, targets: Sequence[int], paths: Sequence[str], bad: dict[int, str]):
        super().__init__(images, targets)
        self.paths, self.bad = list(paths), bad

    def load(self, i: int) -> Image.Image:
        if i in self.bad:
            raise OSError(self.bad[i])  # the split skips and counts it, as it would the file itself
        return super().load(i)

    def describe(self, i: int) -> str:
        return self.paths[i]


def cache_side(data_config: dict[str, Any], resize: str) -> int:
    """The side S of the cached squares: the evaluation transform's first resize."""
    size = int(data_config["input_size"][-1])
    return size if resize == "squash" else int(math.floor(size / float(data_config.get("crop_pct", 0.875))))


def _resize_square(img: Image.Image, side: int, resize: str, interpolation: str) -> np.ndarray:
    from timm.data.transforms import str_to_interp_mode
    from torchvision.transforms import functional as TF

    mode = str_to_interp_mode(interpolation)
    if resize == "squash":
        return np.asarray(TF.resize(img, [side, side], interpolation=mode, antialias=True))
    return np.asarray(TF.center_crop(TF.resize(img, side, interpolation=mode, antialias=True), [side, side]))


def _key(src: ImageFiles, side: int, resize: str, interpolation: str) -> str:
    h = hashlib.sha256(json.dumps([1, side, resize, interpolation]).encode())
    for p in src.paths:
        try:
            st = os.stat(p)
            h.update(f"{p}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        except OSError:
            h.update(f"{p}\0missing\n".encode())
    return h.hexdigest()[:20]


def _build(src: ImageFiles, npy: Path, side: int, resize: str, interpolation: str) -> dict[int, str]:
    """Decode and resize every image into ``npy`` (streamed: one image in memory at a time)."""
    bad: dict[int, str] = {}
    blank = np.zeros((side, side, 3), np.uint8)

    def write(f) -> None:
        header = {"descr": "|u1", "fortran_order": False, "shape": (len(src), side, side, 3)}
        np.lib.format.write_array_header_2_0(f, header)
        for i, path in enumerate(src.paths):
            square = read_image(path, lambda img: _resize_square(img, side, resize, interpolation))
            if isinstance(square, str):
                bad[i], square = square, blank
            f.write(np.ascontiguousarray(square).tobytes())

    atomic_write_stream(npy, write)
    return bad


def _cached(src: ImageFiles, folder: Path, side: int, resize: str, interpolation: str) -> CachedImages:
    from filelock import FileLock

    key = _key(src, side, resize, interpolation)
    npy, meta = folder / f"{key}.npy", folder / f"{key}.json"
    lock = FileLock(str(folder / f"{key}.lock"))
    try:
        lock.acquire()
    except OSError as e:  # e.g. a read-only cache folder: one line, not a traceback
        why = e.strerror or e
        raise OutputError(f"Cannot lock the cache folder '{folder}': {why}; give a writable folder.") from None
    with lock:
        if not (npy.exists() and meta.exists()):
            _logger.info("data.cache: decoding %d images into %s (%d px squares, once)", len(src), npy, side)
            bad = _build(src, npy, side, resize, interpolation)
            info = {
                "images": len(src),
                "side": side,
                "resize": resize,
                "interpolation": interpolation,
                "first": src.paths[0] if src.paths else None,
                "bad": {str(i): r for i, r in bad.items()},
            }
            atomic_write_text(meta, json.dumps(info, indent=1) + "\n")
    info = json.loads(meta.read_text())
    images = np.load(npy, mmap_mode="r")
    if images.shape != (len(src), side, side, 3):
        raise DataError(f"Cache file '{npy}' holds {images.shape}, expected {(len(src), side, side, 3)}; delete it.")
    return CachedImages(images, src.targets, src.paths, {int(i): r for i, r in info["bad"].items()})


def cache_raw(raw: RawDataset, folder: str | Path, data_config: dict[str, Any], resize: str, name: str) -> RawDataset:
    """``raw`` with each :class:`ImageFiles` split replaced by its pre-resized cache under ``folder``.

    Raises:
        ConfigError: no split of dataset ``name`` is read from image files (nothing to cache).
        OutputError: ``folder`` cannot hold the cache files.
    """
    if not any(isinstance(s, ImageFiles) for s in (raw.train, raw.val, raw.test)):
        raise ConfigError(
            f"`data.cache` pre-resizes datasets read from image files; '{name}' is held in memory already: "
            "unset `data.cache`."
        )
    folder = ensure_output_dir(Path(folder).expanduser())
    side, interpolation = cache_side(data_config, resize), str(data_config.get("interpolation", "bicubic"))

    def swap(src: ImageSource | None) -> ImageSource | None:
        return _cached(src, folder, side, resize, interpolation) if isinstance(src, ImageFiles) else src

    return RawDataset(swap(raw.train), swap(raw.test), raw.classes, swap(raw.val), raw.require_all_classes)
