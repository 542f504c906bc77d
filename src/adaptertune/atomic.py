"""The one writer of output files: checked folders, atomic replacement, permissions from the umask.

Every file adaptertune writes (run folders, adapter files, exports, reports, plots, sweep results) goes
through :func:`atomic_write_bytes`: the bytes go to a temporary file in the target's folder, are fsynced,
get the mode a plain ``open(path, "w")`` would give (``0666 & ~umask``; ``mkstemp`` alone gives 0600), and
are renamed over the target. A failed write (full disk, read-only folder) leaves the earlier file intact
and raises :class:`~adaptertune.errors.OutputError` with one line that names the path.
"""

from __future__ import annotations

import csv
import errno
import io
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

from .errors import OutputError

__all__ = [
    "atomic_write_bytes",
    "atomic_write_csv",
    "atomic_write_stream",
    "atomic_write_text",
    "check_output_dir",
    "check_output_file",
    "ensure_output_dir",
    "file_mode",
]


def _reason(e: OSError) -> str:
    return e.strerror or errno.errorcode.get(e.errno or 0, type(e).__name__)


def _umask() -> int:
    try:  # Linux: read it without changing it (os.umask is process-wide, so the swap below races threads)
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def file_mode() -> int:
    """The permission bits a new file gets under the current umask (0644 under umask 022)."""
    return 0o666 & ~_umask()


def _file_among_parents(path: Path) -> Path | None:
    """The first existing parent of ``path`` that is a file, not a folder (``path`` can then never be made)."""
    return next((p for p in path.parents if p.exists() and not p.is_dir()), None)


def check_output_dir(folder: str | Path) -> Path:
    """Fail early, creating nothing, when ``folder`` could never hold output files.

    Raises:
        OutputError: ``folder`` or one of its parents exists and is a file.
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise OutputError(f"Cannot write into '{folder}': it exists and is not a folder.")
    blocker = _file_among_parents(folder)
    if blocker is not None:
        raise OutputError(f"Cannot create output folder '{folder}': '{blocker}' is a file, not a folder.")
    return folder


def check_output_file(path: str | Path) -> Path:
    """Fail early, creating nothing, when ``path`` could never be written as a file.

    Raises:
        OutputError: ``path`` is a folder, or one of its parents exists and is a file.
    """
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"Cannot write '{path}': it is a folder; give a file name.")
    blocker = _file_among_parents(path)
    if blocker is not None:
        raise OutputError(f"Cannot write '{path}': '{blocker}' is a file, not a folder.")
    return path


def ensure_output_dir(folder: str | Path) -> Path:
    """Create ``folder`` (and its parents) for output.

    Raises:
        OutputError: ``folder`` or one of its parents is a file, or it cannot be created (read-only, no space).
    """
    folder = check_output_dir(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OutputError(f"Cannot create output folder '{folder}': {_reason(e)}.") from None
    return folder


def atomic_write_stream(path: str | Path, write: Callable[[BinaryIO], object]) -> None:
    """Call ``write(f)`` on a temporary file, then publish it as ``path`` (see the module docstring).

    Raises:
        OutputError: ``path`` is a folder, its folder cannot be made, or the write fails; ``path`` is unchanged.
    """
    path = check_output_file(path)
    ensure_output_dir(path.parent)
    existed = path.exists()
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), file_mode())
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        kept = "the previous version of the file is intact" if existed else "nothing was written"
        raise OutputError(f"Cannot write '{path}': {_reason(e)}; {kept}.") from None
    except BaseException:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (see the module docstring)."""
    atomic_write_stream(path, lambda f: f.write(data))


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    atomic_write_bytes(path, text.encode())


def atomic_write_csv(path: str | Path, rows: list[dict[str, Any]]) -> None:
    """Write ``rows`` (dicts sharing the first row's keys) as CSV with a header, atomically; no rows: an empty file."""
    buf = io.StringIO()
    if rows:
        w = csv.DictWriter(buf, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    atomic_write_text(path, buf.getvalue())


def _fsync_dir(folder: Path) -> None:
    """Make the rename itself durable (best effort: some filesystems refuse to fsync a folder)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
