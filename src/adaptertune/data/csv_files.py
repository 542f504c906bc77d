"""A CSV of ``path,label`` rows (paths relative to the CSV file), with an optional third ``split`` column."""

from __future__ import annotations

import csv
from pathlib import Path

from ..config import DataConfig
from ..errors import DataError
from .base import ImageFiles, RawDataset
from .folders import FOLDER_TEST_FRACTION, FOLDER_TEST_SEED
from .registry import DatasetInfo, register_dataset
from .splits import train_val_indices

__all__ = ["CSV_COLUMNS", "CSV_SPLITS", "load_csv", "read_label_csv"]

# third-column values: what each means
CSV_SPLITS = {"train": "train", "test": "test", "val": "val", "valid": "val", "validation": "val"}


CSV_COLUMNS = ("path", "label", "split")  # the header names; "split" is optional


def _columns(path: Path, header: list[str]) -> dict[str, int]:
    """Column name -> index of a header row (names in any order, case-insensitive)."""
    names = [c.lower() for c in header]
    accepted = "accepted columns: path, label and optionally split, in any order"
    unknown = [c for c in header if c.lower() not in CSV_COLUMNS]
    if unknown:
        raise DataError(f"CSV '{path}' header {','.join(header)!r}: unknown column '{unknown[0]}'; {accepted}.")
    duplicated = sorted({c for c in names if names.count(c) > 1})
    if duplicated:
        raise DataError(
            f"CSV '{path}' header {','.join(header)!r}: column '{duplicated[0]}' appears twice; {accepted}."
        )
    missing = [c for c in CSV_COLUMNS[:2] if c not in names]
    if missing:
        raise DataError(f"CSV '{path}' header {','.join(header)!r}: no '{missing[0]}' column; {accepted}.")
    return {c: names.index(c) for c in names}


def read_label_csv(path: Path) -> list[tuple[Path, str, str | None]]:
    """Rows ``(absolute path, label, split or None)``.

    A first row made of column names (any of ``path``, ``label``, ``split``) is a header, and the columns
    are matched by name in any order; without one the columns are ``path,label[,split]`` in that order.

    Raises:
        DataError: unreadable file, a header with an unknown, repeated or missing column, a row with the
            wrong number of fields, an unknown split, or files that do not exist.
    """
    try:
        with open(path, newline="") as f:
            rows = [(n, [c.strip() for c in r]) for n, r in enumerate(csv.reader(f), 1) if any(c.strip() for c in r)]
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise DataError(f"Cannot read CSV '{path}': {e}") from None
    columns = None
    if rows and any(c.lower() in CSV_COLUMNS for c in rows[0][1]):  # a data row never names a column
        columns = _columns(path, rows[0][1])
        rows = rows[1:]
    if not rows:
        raise DataError(f"CSV '{path}' has no rows; expected lines 'relative/path.png,label[,train|val|test]'.")
    width = len(columns) if columns else None
    out, missing = [], []
    for n, r in rows:
        if (width is not None and len(r) != width) or (width is None and len(r) not in (2, 3)):
            expected = ",".join(sorted(columns, key=columns.get)) if columns else "path,label[,split]"
            raise DataError(f"CSV '{path}' line {n}: expected {expected!r}, got {','.join(r)!r}.")
        col = columns or dict(zip(CSV_COLUMNS, range(len(r))))
        file_name, label = r[col["path"]], r[col["label"]]
        if not file_name or not label:
            raise DataError(f"CSV '{path}' line {n}: empty path or label in {','.join(r)!r}.")
        split = None
        if "split" in col:
            split = CSV_SPLITS.get(r[col["split"]].lower())
            if split is None:
                raise DataError(
                    f"CSV '{path}' line {n}: split '{r[col['split']]}' is not one of {', '.join(CSV_SPLITS)}."
                )
        file = (path.parent / file_name).resolve()
        if not file.is_file():
            missing.append((n, file_name))
        out.append((file, label, split))
    if missing:
        n, p = missing[0]
        raise DataError(
            f"CSV '{path}' line {n}: '{p}' does not exist (relative to {path.parent}); "
            f"{len(missing)} of {len(out)} rows point nowhere. Fix or remove them."
        )
    return out


def _class_order(labels: set[str]) -> list[str]:
    # integer labels sort as numbers (2 before 10), names alphabetically
    if all(lab.lstrip("-").isdigit() for lab in labels):
        return sorted(labels, key=int)
    return sorted(labels)


def load_csv(cfg: DataConfig) -> RawDataset:
    if cfg.root is None:
        raise DataError("Dataset 'csv' needs --data-root FILE.csv (rows 'relative/path.png,label[,split]').")
    path = Path(cfg.root).expanduser()
    if not path.is_file():
        raise DataError(f"CSV file '{cfg.root}' does not exist; pass --data-root FILE.csv.")
    rows = read_label_csv(path)
    classes = _class_order({label for _, label, _ in rows})
    index = {c: i for i, c in enumerate(classes)}

    def source(split: str | None) -> ImageFiles:
        chosen = [(p, index[lab]) for p, lab, s in rows if s == split]
        return ImageFiles([p for p, _ in chosen], [t for _, t in chosen])

    splits = {s for _, _, s in rows}
    if splits == {None}:
        every = source(None)
        train_idx, test_idx = train_val_indices(every.targets, FOLDER_TEST_FRACTION, FOLDER_TEST_SEED)
        pick = lambda idx: ImageFiles([every.paths[i] for i in idx], [every.targets[i] for i in idx])  # noqa: E731
        return RawDataset(pick(train_idx), pick(test_idx), classes)
    if None in splits or "train" not in splits or "test" not in splits:
        raise DataError(
            f"CSV '{path}': give every row a split with at least 'train' and 'test' rows, or no split column at all "
            f"(found {sorted(s or '<none>' for s in splits)})."
        )
    return RawDataset(source("train"), source("test"), classes, source("val") if "val" in splits else None)


register_dataset(
    DatasetInfo(
        "csv",
        "a CSV of 'path,label[,split]' rows, paths relative to the CSV (no split column: fixed 80/20 split)",
        load_csv,
        source="--data-root FILE.csv",
        splits="from the split column",
        present=lambda root: root is not None and Path(root).is_file(),
    )
)
