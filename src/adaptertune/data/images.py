"""Turning any decoded image into 8-bit RGB, opening image files, and finding them in folders and globs.

Pillow's own ``convert("RGB")`` clips high-depth modes instead of rescaling them: a 16-bit PNG (mode
``I;16``) comes out as pure black and white. Here every mode is mapped onto 0..255 by its full range.
"""

from __future__ import annotations

import glob
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

import numpy as np
from PIL import Image

from ..errors import DataError

__all__ = ["IMAGE_SUFFIXES", "find_images", "open_rgb", "read_image", "read_images", "to_rgb"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
_16_BIT = ("I;16", "I;16L", "I;16B", "I;16N")
_GLOB_CHARS = set("*?[")
T = TypeVar("T")


def _from_16_bit(a: np.ndarray) -> np.ndarray:
    # 0..65535 -> 0..255, rounded: v * 257 maps back to exactly v (65535 / 255 = 257)
    return ((a.astype(np.uint32) + 128) // 257).astype(np.uint8)


def to_rgb(img: Image.Image, name: str = "image") -> Image.Image:
    """``img`` as 8-bit RGB, each mode scaled by its full range.

    8-bit modes (``1``, ``L``, ``P``, ``LA``, ``RGB``, ``RGBA``, ``CMYK``, ``YCbCr``, ...) use Pillow's
    conversion. 16-bit grey (``I;16*``, 16-bit PNG/TIFF/PGM) is divided by 257. 32-bit integers (``I``) are
    taken as 16-bit values and must lie in 0..65535; floats (``F``) must lie in [0, 1] and are multiplied by 255.

    Raises:
        DataError: an ``I`` or ``F`` image outside that range (names ``name``, the mode and the range found).
    """
    mode = img.mode
    if mode in _16_BIT or mode in ("I", "F"):
        a = np.asarray(img)
        if mode in _16_BIT:
            gray = _from_16_bit(a)
        elif mode == "I":
            lo, hi = int(a.min()), int(a.max())
            if lo < 0 or hi > 65535:
                raise DataError(
                    f"Image {name} has mode 'I' with values {lo}..{hi}; accepted: 32-bit integer images holding "
                    "16-bit values (0..65535). Convert it to 8 or 16 bits."
                )
            gray = _from_16_bit(a)
        else:
            lo, hi = float(a.min()), float(a.max())
            if not (np.isfinite(a).all() and lo >= 0.0 and hi <= 1.0):
                raise DataError(
                    f"Image {name} has mode 'F' with values {lo:.4g}..{hi:.4g}; accepted: float images in [0, 1]. "
                    "Convert it to 8 or 16 bits."
                )
            gray = np.round(a * 255.0).astype(np.uint8)
        return Image.fromarray(np.repeat(gray[..., None], 3, axis=-1), "RGB")
    if mode == "RGB":
        return img
    return img.convert("RGB")


def open_rgb(path: str | Path) -> Image.Image:
    """Decode the image file ``path`` fully and return it as 8-bit RGB.

    Raises:
        OSError: the file is missing or not a readable image (Pillow's own error).
        DataError: a high-depth image outside its accepted range (see :func:`to_rgb`).
    """
    with open(path, "rb") as f:
        img = Image.open(f)
        img.load()  # read now: a truncated file fails here, inside the caller's error handling
        return to_rgb(img, f"'{path}'")


def find_images(items: Sequence[str | Path]) -> list[Path]:
    """Image files named by ``items``: files as given, folders searched recursively for image suffixes,
    and glob patterns (``**`` allowed) expanded; in the order given, folders and globs sorted.

    Raises:
        DataError: a path that does not exist, or a folder or pattern that holds no image file.
    """
    out: list[Path] = []
    for item in items:
        p = Path(item)
        if p.is_dir():
            found = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise DataError(f"Folder '{p}' holds no image files ({', '.join(IMAGE_SUFFIXES)}).")
            out += found
        elif p.exists():
            out.append(p)
        elif _GLOB_CHARS & set(str(item)):
            found = sorted(Path(f) for f in glob.glob(str(item), recursive=True) if Path(f).is_file())
            if not found:
                raise DataError(f"Pattern '{item}' matches no file.")
            out += found
        else:
            raise DataError(f"Cannot read image '{p}': no such file or folder.")
    return out


def read_image(path: Path | str, transform: Callable[[Image.Image], T]) -> T | str:
    """``transform`` of the decoded RGB image ``path``, or a one-line reason it cannot be decoded."""
    try:
        return transform(open_rgb(path))
    except (OSError, ValueError, SyntaxError) as e:  # DataError (out-of-range depth) is a ValueError
        return str(e).splitlines()[0] if str(e) else type(e).__name__


def read_images(paths: Sequence[Path], transform: Callable[[Image.Image], T]) -> list[tuple[Path, T | str]]:
    """``(path, transformed image)`` per file, or ``(path, reason)`` for one that cannot be decoded.

    Raises:
        DataError: none of ``paths`` could be read (names the first and why).
    """
    out = [(path, read_image(path, transform)) for path in paths]
    bad = [(p, r) for p, r in out if isinstance(r, str)]
    if bad and len(bad) == len(out):
        raise DataError(f"None of the {len(out)} images could be read; '{bad[0][0]}': {bad[0][1]}")
    return out
