"""The CSV dataset (data/csv_files.py): a CSV file of path,label[,split] rows naming image files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from adaptertune.config import DataConfig
from adaptertune.data import build_splits, load_raw
from adaptertune.errors import DataError
from helpers import DATA_CONFIG


def make_csv(root: Path, rows: list[str], n_images: int = 6) -> Path:
    (root / "img").mkdir(parents=True, exist_ok=True)
    for i in range(n_images):
        Image.fromarray(np.full((20, 20, 3), i * 30, np.uint8)).save(root / "img" / f"{i}.png")
    path = root / "labels.csv"
    path.write_text("\n".join(rows) + "\n")
    return path


def test_csv_with_split_column_and_numeric_labels(tmp_path):
    rows = ["path,label,split", "img/0.png,2,train", "img/1.png,10,train", "img/2.png,2,train", "img/3.png,10,test"]
    rows += ["img/4.png,2,val", "", "img/5.png,10,validation"]
    raw = load_raw(DataConfig(name="csv", root=str(make_csv(tmp_path, rows))))
    assert raw.classes == ["2", "10"]  # numeric order, not "10" < "2"
    assert raw.train.targets == [0, 1, 0] and raw.test.targets == [1] and raw.val.targets == [0, 1]
    assert raw.train.paths[1] == str((tmp_path / "img" / "1.png").resolve())  # relative to the CSV
    splits = build_splits(DataConfig(name="csv", root=str(tmp_path / "labels.csv")), DATA_CONFIG, raw)
    assert splits.sizes() == {"train": 3, "val": 2, "test": 1} and splits.train[0][0].shape == (3, 16, 16)


def test_csv_without_split_column_gets_fixed_split(tmp_path):
    rows = [f"img/{i % 6}.png,{'cat' if i % 2 else 'dog'}" for i in range(20)]
    a = load_raw(DataConfig(name="csv", root=str(make_csv(tmp_path, rows)), split_seed=0))
    b = load_raw(DataConfig(name="csv", root=str(tmp_path / "labels.csv"), split_seed=9))
    assert a.classes == ["cat", "dog"] and (len(a.train), len(a.test)) == (16, 4)
    assert a.test.paths == b.test.paths  # the test split does not depend on any run seed


@pytest.mark.parametrize(
    "rows, match",
    [
        (["img/0.png,a", "img/nope.png,b", "img/gone.png,b"], r"line 2: 'img/nope.png' does not exist.*2 of 3 rows"),
        (["img/0.png,a,train", "img/1.png"], r"line 2: expected 'path,label\[,split\]'"),
        (["img/0.png,a,train", "img/1.png,b,holdout"], "split 'holdout' is not one of"),
        (["img/0.png,a,train", "img/1.png,b,train"], "at least 'train' and 'test'"),
        (["path,label"], "has no rows"),
    ],
)
def test_csv_bad_rows_are_clear_errors(tmp_path, rows, match):
    with pytest.raises(DataError, match=match):
        load_raw(DataConfig(name="csv", root=str(make_csv(tmp_path, rows))))


def test_csv_header_columns_in_any_order(tmp_path):
    rows = ["SPLIT,label,path", "train,2,img/0.png", "train,10,img/1.png", "test,10,img/3.png"]
    raw = load_raw(DataConfig(name="csv", root=str(make_csv(tmp_path, rows))))
    assert raw.classes == ["2", "10"] and raw.train.targets == [0, 1] and raw.test.targets == [1]
    assert raw.test.paths == [str((tmp_path / "img" / "3.png").resolve())]
    rows = ["label,path", *[f"{'cat' if i % 2 else 'dog'},img/{i}.png" for i in range(6)]]
    raw = load_raw(DataConfig(name="csv", root=str(make_csv(tmp_path, rows))))
    assert raw.classes == ["cat", "dog"] and len(raw.train) + len(raw.test) == 6


@pytest.mark.parametrize(
    "header, match",
    [
        ("path,lable,split", r"header 'path,lable,split': unknown column 'lable'; accepted columns: path, label"),
        ("path,split", r"header 'path,split': no 'label' column; accepted columns"),
        ("label,split", r"header 'label,split': no 'path' column"),
        ("path,label,label", r"'label' appears twice"),
        ("path,label,split,weight", r"unknown column 'weight'"),
    ],
)
def test_csv_header_is_checked_by_name(tmp_path, header, match):
    with pytest.raises(DataError, match=match) as e:
        load_raw(DataConfig(name="csv", root=str(make_csv(tmp_path, [header, "img/0.png,a,train"]))))
    assert "\n" not in str(e.value)


def test_csv_row_width_follows_the_header(tmp_path):
    rows = ["label,path", "a,img/0.png,train"]
    with pytest.raises(DataError, match=r"line 2: expected 'label,path', got 'a,img/0.png,train'"):
        load_raw(DataConfig(name="csv", root=str(make_csv(tmp_path, rows))))


def test_csv_missing_file_or_root(tmp_path):
    with pytest.raises(DataError, match="needs --data-root FILE.csv"):
        load_raw(DataConfig(name="csv"))
    with pytest.raises(DataError, match="does not exist"):
        load_raw(DataConfig(name="csv", root=str(tmp_path / "x.csv")))
