"""Bad data (data/base.py, data/folders.py): truncated images (counted skip, or an error with --strict), bad labels,
empty classes, the listing."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from adaptertune.cli import main
from adaptertune.config import DataConfig
from adaptertune.data import DATASETS, ArraySource, RawDataset, build_splits, collate_skip, load_raw
from adaptertune.errors import DataError
from helpers import DATA_CONFIG, TINY_VIT_ARGS, make_image_folder


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


@pytest.fixture
def folder_with_truncated_png(tmp_path) -> tuple[Path, Path]:
    root = make_image_folder(tmp_path / "imgs", n_classes=2, n_train=6, n_test=2, size=32)
    bad = root / "train" / "class_1" / "3.png"
    truncate(bad)
    return root, bad


def test_truncated_png_is_skipped_and_counted(folder_with_truncated_png):
    root, bad = folder_with_truncated_png
    splits = build_splits(DataConfig(root=str(root), val_fraction=0.0), DATA_CONFIG)
    loader = torch.utils.data.DataLoader(splits.train, batch_size=5, collate_fn=collate_skip)
    batches = list(loader)
    assert sum(b[2] for b in batches) == 1 and sum(len(b[1]) for b in batches) == 11
    strict = build_splits(DataConfig(root=str(root), val_fraction=0.0, strict=True), DATA_CONFIG)
    with pytest.raises(DataError, match=rf"Corrupt image {bad}"):
        list(torch.utils.data.DataLoader(strict.train, batch_size=5, collate_fn=collate_skip))


@pytest.mark.parametrize("method", ["adapter", "linear-probe-cached"])
def test_truncated_png_is_counted_in_the_run_summary(folder_with_truncated_png, tmp_path, capsys, method):
    root, _ = folder_with_truncated_png
    truncate(root / "test" / "class_0" / "0.png")  # one corrupt test image too: 3 of 4 are scored
    common = ["train", *TINY_VIT_ARGS, "--dataset", "imagefolder", "--data-root"]
    common += [str(root), "--epochs", "1", "--batch-size", "8", "--num-workers", "0", "--quiet", "--val-fraction", "0"]
    assert main([*common, "--method", method, "--out-dir", str(tmp_path / "run")]) == 0
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert (summary["skipped_images"], summary["skipped_test_images"]) == (1, 1)
    assert round(summary["test_acc"] * 3 / 100) * 100 / 3 == pytest.approx(summary["test_acc"])  # k of 3
    capsys.readouterr()
    assert main(["eval", str(tmp_path / "run"), "--json", "-"]) == 0
    assert json.loads(capsys.readouterr().out)["skipped"] == 1


def test_label_out_of_range_and_empty_class_are_clear_errors():
    img = np.zeros((3, 4, 4), np.uint8)
    with pytest.raises(DataError, match="label 5 outside 0..2"):
        RawDataset(ArraySource(img, [0, 1, 2]), ArraySource(img, [0, 5, 1]), ["a", "b", "c"]).check("x")
    with pytest.raises(DataError, match="class 'c' has no training images"):
        RawDataset(ArraySource(img, [0, 1, 1]), ArraySource(img, [0, 1, 1]), ["a", "b", "c"]).check("x")
    with pytest.raises(DataError, match="empty test split"):
        RawDataset(ArraySource(img, [0, 1, 2]), ArraySource(img[:0], []), ["a", "b", "c"]).check("x")


def test_empty_class_folder_is_clear_error(tmp_path):
    root = make_image_folder(tmp_path / "f", n_classes=2, n_train=2, n_test=1)
    for p in (root / "train" / "class_1").iterdir():
        p.unlink()
    with pytest.raises(DataError, match="class_1' is empty"):
        load_raw(DataConfig(root=str(root)))


def test_list_datasets_shows_every_entry(capsys):
    assert main(["list", "datasets"]) == 0
    out = capsys.readouterr().out
    header = out.splitlines()[0]
    assert all(col in header for col in ("classes", "splits", "source", "present"))
    for name in DATASETS.names():
        assert name in out
    row = next(line for line in out.splitlines() if line.startswith("cifar100 "))
    assert " 100 " in row and "50000" in row
