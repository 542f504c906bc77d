"""The run folder's ``skipped.txt``: the images a run (or ``eval``) could not read and skipped, one line each.

A line is ``split<TAB>path<TAB>reason`` (a tab or line break inside a path or reason becomes a space), in
split order (train, val, test), then by path. Training writes the lines of every split it read; ``eval``
replaces the test lines and keeps the others. The file is there only while it names at least one image.
``summary.json`` counts the same files per split (``unreadable_images``); the report's Data table counts the
images read (the split's size less these).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path

from ..atomic import atomic_write_text
from ..data.base import Unreadable
from ..data.loaders import unreadable_of
from ..engine.distributed import gather_objects
from .folder import SKIPPED_FILE

__all__ = ["SPLITS", "gather_unreadable", "read_skipped", "skipped_note", "write_skipped"]

SPLITS = ("train", "val", "test")


def gather_unreadable(loaders: Iterable[tuple[str, object]]) -> dict[str, list[Unreadable]]:
    """The files the loaders of each split skipped (``(split, loader)`` pairs; a split may have several),
    over all ranks; every rank must call it. Splits without a skipped file are left out."""
    local: dict[str, list[Unreadable]] = {}
    for split, lo in loaders:
        local.setdefault(split, []).extend(unreadable_of(lo))
    merged: dict[str, dict[str, str]] = {}
    for part in gather_objects(local):
        for split, items in part.items():
            merged.setdefault(split, {}).update({u.path: u.reason for u in items})
    return {s: [Unreadable(p, m[p]) for p in sorted(m)] for s, m in _in_order(merged).items() if m}


def _in_order(d: Mapping[str, object]) -> dict[str, object]:
    return {s: d[s] for s in sorted(d, key=lambda s: (SPLITS.index(s) if s in SPLITS else len(SPLITS), s))}


def _flat(text: str) -> str:
    return " ".join(str(text).replace("\t", " ").splitlines())


def read_skipped(run_dir: str | Path) -> dict[str, list[Unreadable]]:
    """The files ``run_dir/skipped.txt`` names per split (empty without the file; malformed lines are ignored)."""
    path = Path(run_dir) / SKIPPED_FILE
    out: dict[str, list[Unreadable]] = {}
    if not path.is_file():
        return out
    for line in path.read_text(encoding="utf-8").splitlines():
        parts = line.split("\t", 2)
        if len(parts) == 3:
            out.setdefault(parts[0], []).append(Unreadable(parts[1], parts[2]))
    return out


def write_skipped(
    run_dir: str | Path, found: Mapping[str, list[Unreadable]], replace: tuple[str, ...] = SPLITS
) -> Path | None:
    """Record ``found`` in ``run_dir/skipped.txt`` (atomically), replacing the lines of the splits in
    ``replace`` and keeping the others; returns the file's path, or None when it names no image (it is
    then removed). An unchanged file is not rewritten.

    Raises:
        OutputError: the file cannot be written.
    """
    path = Path(run_dir) / SKIPPED_FILE
    before = read_skipped(run_dir)
    kept = {s: items for s, items in before.items() if s not in replace}
    merged = _in_order({**kept, **{s: items for s, items in found.items() if items}})
    lines = [f"{s}\t{_flat(u.path)}\t{_flat(u.reason)}" for s, items in merged.items() for u in items]
    if not lines:
        path.unlink(missing_ok=True)
        return None
    text = "\n".join(lines) + "\n"
    if not (path.is_file() and path.read_text(encoding="utf-8") == text):
        atomic_write_text(path, text)
    return path


def skipped_note(counts: Mapping[str, int], path: str | Path | None) -> str | None:
    """``skipped 2 unreadable images (train 1, test 1): see RUN/skipped.txt``; None when nothing was skipped."""
    counts = {s: n for s, n in _in_order(counts).items() if n}
    total = sum(counts.values())
    if not total:
        return None
    per_split = ", ".join(f"{s} {n}" for s, n in counts.items())
    where = f": see {path}" if path is not None else ""
    return f"skipped {total} unreadable image{'s' if total != 1 else ''} ({per_split}){where}"
