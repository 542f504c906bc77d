"""data.cache (data/cache.py): a file-backed dataset decoded and resized once into a memory-mapped array."""

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from adaptertune.config import DataConfig, RunConfig
from adaptertune.data import build_splits
from adaptertune.data.base import ArraySource, RawDataset
from adaptertune.data.cache import CachedImages, cache_raw, cache_side
from adaptertune.data.loaders import ArrayLoader, make_loader
from adaptertune.errors import ConfigError, DataError
from adaptertune.runs import run
from helpers import make_image_folder

DC = {"input_size": (3, 32, 32), "interpolation": "bicubic", "mean": (0.5,) * 3, "std": (0.25,) * 3, "crop_pct": 0.875}
CPU = torch.device("cpu")


def _folder(tmp_path: Path, size: int = 40) -> Path:
    return make_image_folder(tmp_path / "data", n_classes=3, n_train=6, n_test=3, size=size)


def _stack(view) -> torch.Tensor:
    return torch.stack([view[i][0] for i in range(len(view))])


def test_cache_side_is_the_eval_resize():
    assert cache_side(DC, "crop") == 36  # floor(32 / 0.875)
    assert cache_side(DC, "squash") == 32
    assert cache_side({**DC, "input_size": (3, 224, 224)}, "crop") == 256


@pytest.mark.parametrize("resize", ["crop", "squash"])
def test_square_images_evaluate_exactly_as_the_files(tmp_path, resize):
    # a square file: the cached square is the eval transform's own first resize, so every eval pixel is equal
    root = _folder(tmp_path)
    plain = build_splits(DataConfig(root=str(root), val_fraction=0.0, augment=False, resize=resize), DC)
    cached = build_splits(
        DataConfig(root=str(root), val_fraction=0.0, augment=False, resize=resize, cache=str(tmp_path / "c")), DC
    )
    assert isinstance(cached.test.source, CachedImages) and cached.test.source.images.shape[1:] == (
        cache_side(DC, resize),
    ) * 2 + (3,)
    assert torch.equal(_stack(plain.test), _stack(cached.test))  # per-image path: bitwise
    assert torch.equal(_stack(plain.train), _stack(cached.train))
    # the batched device path over the cache: within float rounding of the per-image normalisation
    loader = make_loader(cached.test, 4, 0, CPU)
    assert isinstance(loader, ArrayLoader)
    assert torch.allclose(torch.cat([x for x, _, _ in loader]), _stack(plain.test), atol=1e-5)
    assert cached.test.targets == plain.test.targets and cached.test.source.describe(0).endswith(".png")


def test_non_square_images_keep_the_centred_square(tmp_path):
    root = tmp_path / "wide"
    for split in ("train", "test"):
        for c in range(2):
            (root / split / f"c{c}").mkdir(parents=True)
            Image.fromarray(np.full((40, 80, 3), 60 * c + 10, np.uint8)).save(root / split / f"c{c}" / "0.png")
    splits = build_splits(DataConfig(root=str(root), val_fraction=0.0, cache=str(tmp_path / "c")), DC)
    assert splits.train.source.images.shape == (2, 36, 36, 3)
    assert splits.train.source.images[1].min() == splits.train.source.images[1].max() == 70


def test_cache_is_built_once_and_rebuilt_when_a_file_changes(tmp_path):
    root, cache = _folder(tmp_path), tmp_path / "c"
    cfg = DataConfig(root=str(root), val_fraction=0.0, cache=str(cache))
    build_splits(cfg, DC)
    first = sorted(cache.glob("*.npy"))
    assert len(first) == 2  # train/ and test/
    stamps = [p.stat().st_mtime_ns for p in first]
    build_splits(cfg, DC)
    assert sorted(cache.glob("*.npy")) == first and [p.stat().st_mtime_ns for p in first] == stamps
    # an edited training image: a new cache for train/, the same for test/
    img = next((root / "train").rglob("*.png"))
    Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(img)
    os.utime(img, ns=(1, 1))
    splits = build_splits(cfg, DC)
    assert len(list(cache.glob("*.npy"))) == 3
    i = splits.train.source.paths.index(str(img))
    assert splits.train.source.images[i].max() == 0


def test_corrupt_file_is_skipped_or_strict_error(tmp_path):
    root = _folder(tmp_path)
    bad = sorted((root / "train" / "class_0").glob("*.png"))[0]
    bad.write_bytes(b"not an image")
    cfg = DataConfig(root=str(root), val_fraction=0.0, augment=False, cache=str(tmp_path / "c"))
    splits = build_splits(cfg, DC)
    src = splits.train.source
    assert list(src.bad) == [src.paths.index(str(bad))]
    meta = json.loads(next(p for p in (tmp_path / "c").glob("*.json") if json.loads(p.read_text())["bad"]).read_text())
    assert list(meta["bad"]) == [str(src.paths.index(str(bad)))]
    loader = make_loader(splits.train, 4, 0, CPU)  # a cache with a bad file runs per image, skipping it
    assert not isinstance(loader, ArrayLoader)
    assert sum(s for _, _, s in loader) == 1 and sum(len(y) for _, y, _ in loader) == len(splits.train) - 1
    strict = build_splits(DataConfig(root=str(root), val_fraction=0.0, strict=True, cache=str(tmp_path / "c")), DC)
    j = list(strict.train.indices).index(src.paths.index(str(bad)))
    with pytest.raises(DataError, match=f"Corrupt image {bad}"):
        strict.train[j]


def test_array_dataset_refuses_the_cache(tmp_path):
    images = np.zeros((4, 8, 8), np.uint8)
    raw = RawDataset(ArraySource(images, [0, 1, 0, 1]), ArraySource(images[:2], [0, 1]), ["a", "b"])
    with pytest.raises(ConfigError, match=r"`data.cache` .* 'digits' is held in memory already"):
        cache_raw(raw, tmp_path / "c", DC, "crop", "digits")
    assert not (tmp_path / "c").exists()


def test_cache_folder_that_is_a_file_is_one_line_error(tmp_path):
    from adaptertune.errors import OutputError

    (tmp_path / "f").write_text("x")
    with pytest.raises(OutputError, match="is a file"):
        build_splits(DataConfig(root=str(_folder(tmp_path)), cache=str(tmp_path / "f" / "c")), DC)


def test_cache_folder_that_cannot_be_locked_is_one_line_error(tmp_path, monkeypatch):
    from filelock import FileLock

    from adaptertune.errors import OutputError

    def refuse(self, *a, **k):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(FileLock, "acquire", refuse)
    with pytest.raises(OutputError, match=r"Cannot lock the cache folder '.*c': Permission denied; give a writable"):
        build_splits(DataConfig(root=str(_folder(tmp_path)), cache=str(tmp_path / "c")), DC)
    assert not list((tmp_path / "c").glob("*.npy"))


def test_run_with_cache_records_pre_resized_protocol(tmp_path):
    root = _folder(tmp_path, size=36)
    cfg = {
        "backbone": {"name": "vit_tiny_patch16_224", "args": {"img_size": 32, "patch_size": 8, "embed_dim": 32,
                     "depth": 2, "num_heads": 2}, "pretrained": False},
        "data": {"name": "imagefolder", "root": str(root), "num_workers": 0, "cache": str(tmp_path / "c")},
        "method": "adapter",
        "train": {"epochs": 1, "batch_size": 4, "device": "cpu"},
        "out_dir": str(tmp_path / "run"),
    }  # fmt: skip
    summary = run(RunConfig.from_dict(cfg))
    assert summary.status.value == "success"
    saved = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert saved["protocol"]["pre_resized"] == 35  # floor(32 / 0.9): timm ViT crop_pct
