"""Finding a standard dataset's files under ``--data-root`` (or fetching them with ``--download``)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path

from ..config import DataConfig
from ..errors import DataError

__all__ = ["DEFAULT_ROOT", "dataset_dir", "download", "files_present", "require_files"]

_logger = logging.getLogger(__name__)

# torchvision's usual ``root``: relative to the working directory when --data-root is not given
DEFAULT_ROOT = "data"


def dataset_dir(root: str | None, folder: str) -> Path:
    """``root/folder``, or ``root`` itself when it already is that folder (either spelling of --data-root works)."""
    base = Path(root or DEFAULT_ROOT).expanduser()
    return base if base.name == folder or not folder else base / folder


def files_present(folder: str, files: Sequence[str]) -> Callable[[str | None], bool]:
    """A dataset's ``present`` check: every one of ``files`` is under ``dataset_dir(root, folder)``."""
    return lambda root: all((dataset_dir(root, folder) / f).exists() for f in files)


def require_files(name: str, base: Path, files: Sequence[str], how: str = "") -> None:
    """Raise a DataError naming every missing file of ``files`` (relative to ``base``) and how to get them."""
    missing = [f for f in files if not (base / f).exists()]
    if missing:
        which = "" if len(missing) == len(files) else f" (missing: {', '.join(missing)})"
        raise DataError(
            f"Dataset '{name}' not found: expected {', '.join(files)} under '{base.resolve()}'{which}. "
            f"Pass --data-root DIR (the folder holding {base.name}/, or {base.name}/ itself)"
            f"{how or ', or add --download to fetch it (needs internet)'}."
        )


def download(cfg: DataConfig, name: str, fetch: Callable[[str], object]) -> None:
    """Run ``fetch(root)`` (a torchvision download) when ``--download`` is given; errors become DataError."""
    if not cfg.download:
        return
    root = cfg.root or DEFAULT_ROOT
    _logger.info("Downloading %s to %s", name, root)
    try:
        fetch(root)
    except Exception as e:  # offline, checksum, disk full, ...
        reason = str(e).splitlines()[0][:160] if str(e) else ""
        raise DataError(
            f"Downloading '{name}' to '{root}' failed ({type(e).__name__}: {reason}). "
            "Offline? Put the files under --data-root instead."
        ) from None
