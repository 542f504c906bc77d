"""The Hugging Face dataset (data/hf.py): a ``datasets`` save_to_disk folder, and the extra it needs."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from adaptertune.config import DataConfig
from adaptertune.data import build_splits, load_raw
from adaptertune.errors import DataError, MissingExtraError
from helpers import DATA_CONFIG


def test_hf_save_to_disk_folder(tmp_path):
    datasets = pytest.importorskip("datasets", reason="the 'hf' extra: pip install 'adaptertune[hf]'")
    feats = datasets.Features({"img": datasets.Image(), "label": datasets.ClassLabel(names=["ant", "bee", "cow"])})
    imgs = [Image.fromarray(np.full((12, 12, 3), 40 * i, np.uint8)) for i in range(6)]
    part = lambda n: datasets.Dataset.from_dict({"img": imgs[:n], "label": [i % 3 for i in range(n)]}, features=feats)  # noqa: E731
    datasets.DatasetDict({"train": part(6), "test": part(3)}).save_to_disk(str(tmp_path / "dd"))
    raw = load_raw(DataConfig(name="hf", root=str(tmp_path / "dd")))
    assert raw.classes == ["ant", "bee", "cow"] and raw.train.targets == [0, 1, 2, 0, 1, 2] and len(raw.test) == 3
    assert np.asarray(raw.train.load(2))[0, 0, 0] == 80
    splits = build_splits(DataConfig(name="hf", root=str(tmp_path / "dd"), val_fraction=0.0), DATA_CONFIG, raw)
    assert splits.train[1][0].shape == (3, 16, 16) and splits.train[1][1] == 1

    # a single Dataset with string labels and no test split: fixed 80/20 split, classes from the values
    plain = datasets.Dataset.from_dict(
        {"image": imgs * 2, "label": ["x", "y"] * 6},
        features=datasets.Features({"image": datasets.Image(), "label": datasets.Value("string")}),
    )
    plain.save_to_disk(str(tmp_path / "plain"))
    raw = load_raw(DataConfig(name="hf", root=str(tmp_path / "plain")))
    assert raw.classes == ["x", "y"] and (len(raw.train), len(raw.test)) == (10, 2)


def test_hf_without_datasets_installed_says_how_to_install(tmp_path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "datasets", None)  # as if not installed
    with pytest.raises(MissingExtraError, match=r"pip install 'adaptertune\[hf\]'"):
        load_raw(DataConfig(name="hf", root=str(tmp_path)))


def test_hf_bad_roots(tmp_path):
    pytest.importorskip("datasets", reason="the 'hf' extra: pip install 'adaptertune[hf]'")
    with pytest.raises(DataError, match="add --download"):
        load_raw(DataConfig(name="hf", root="someone/some-dataset"))
    with pytest.raises(DataError, match="not a datasets save_to_disk folder"):
        load_raw(DataConfig(name="hf", root=str(tmp_path)))
