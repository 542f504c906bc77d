"""Training augmentation presets (data/transforms.py): ``data.hflip: false`` never flips, on any path.

The probe image is a horizontal ramp (dark left, bright right): any crop of it, resized, still brightens to
the right, and only a mirror makes it darken, so each output says whether it was flipped.
"""

import numpy as np
import pytest
import torch
import torchvision.transforms as T
from PIL import Image

from adaptertune.config import DataConfig
from adaptertune.data.base import ArraySource, RawDataset, SplitView
from adaptertune.data.batched import batch_pipeline
from adaptertune.data.loaders import make_loader
from adaptertune.data.registry import build_splits
from adaptertune.data.transforms import build_transforms
from adaptertune.errors import ConfigError

DC = {"input_size": (3, 32, 32), "interpolation": "bicubic", "mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5)}
CPU = torch.device("cpu")
RAMP = np.tile(np.arange(0, 28 * 9, 9, dtype=np.uint8), (28, 1))  # (28, 28), 0 .. 243 left to right


def _flipped(x: torch.Tensor) -> torch.Tensor:
    """Per image of (B, C, H, W): True where the right half is darker than the left (mirrored)."""
    half = x.shape[-1] // 2
    return x[:, 0, :, :half].mean((-2, -1)) > x[:, 0, :, -half:].mean((-2, -1))


def _ramps(n: int = 64) -> ArraySource:
    return ArraySource(np.repeat(RAMP[None], n, axis=0), [i % 2 for i in range(n)])


def _loader_flips(train_tf, batched: str, epochs: int = 4) -> tuple[int, int]:
    view = SplitView(_ramps(), np.arange(64), train_tf)
    loader = make_loader(view, 16, 0, CPU, shuffle=True, seed=3, batched=batched)
    flips = seen = 0
    for epoch in range(epochs):
        loader.sampler.set_epoch(epoch)
        for x, _, _ in loader:
            flips += int(_flipped(x).sum())
            seen += len(x)
    return flips, seen


@pytest.mark.parametrize("batched", ["on", "off"])
@pytest.mark.parametrize("crop_scale", [0.08, 0.5])
def test_no_flip_is_ever_drawn_when_hflip_is_off(batched, crop_scale):
    train_tf, _ = build_transforms(DC, aug="basic", hflip=False, crop_scale=crop_scale)
    assert not any(isinstance(t, T.RandomHorizontalFlip) for t in train_tf.transforms)
    flips, seen = _loader_flips(train_tf, batched)
    assert (flips, seen) == (0, 256)


@pytest.mark.parametrize("batched", ["on", "off"])
def test_the_probe_sees_flips_when_hflip_is_on(batched):
    # the same probe catches flips when they are allowed (about half of 256 draws)
    flips, seen = _loader_flips(build_transforms(DC, aug="basic", hflip=True)[0], batched)
    assert 80 < flips < 176 and seen == 256


def test_batched_pipeline_draws_no_flip_without_hflip():
    on = batch_pipeline(build_transforms(DC, hflip=True)[0])
    off = batch_pipeline(build_transforms(DC, hflip=False)[0])
    assert [op.kind for op in on.geometric] == ["rrc", "flip"] and [op.kind for op in off.geometric] == ["rrc"]
    assert len(off.draw(torch.Generator().manual_seed(0), 28, 28)) == 1 and off.random


def test_crop_scale_reaches_the_crop_of_every_preset():
    basic = build_transforms(DC, hflip=False, crop_scale=0.5)[0]
    assert basic.transforms[0].scale == (0.5, 1.0)
    assert batch_pipeline(basic).geometric[0].scale == (0.5, 1.0)
    rand = build_transforms(DC, aug="randaug", hflip=False, crop_scale=0.5)[0]
    crops = [t for t in rand.transforms if "RandomResizedCrop" in type(t).__name__]  # timm's own class
    assert len(crops) == 1 and tuple(crops[0].scale) == (0.5, 1.0)
    with pytest.raises(ValueError, match="crop_scale must be in"):
        build_transforms(DC, crop_scale=0.0)


def test_randaug_has_no_flip_when_hflip_is_off():
    flips_on = build_transforms(DC, aug="randaug", hflip=True)[0].transforms
    flips_off = build_transforms(DC, aug="randaug", hflip=False)[0].transforms
    assert any(isinstance(t, T.RandomHorizontalFlip) for t in flips_on)
    assert not any(isinstance(t, T.RandomHorizontalFlip) for t in flips_off)
    assert not any("flip" in type(t).__name__.lower() for t in flips_off)
    # every draw through the PIL pipeline runs (RandAugment's ops include none that mirror)
    img = Image.fromarray(RAMP).convert("RGB")
    for seed in range(20):
        torch.manual_seed(seed)
        assert build_transforms(DC, aug="randaug", hflip=False)[0](img).shape == (3, 32, 32)


def test_data_config_hflip_reaches_the_training_view():
    raw = RawDataset(_ramps(40), _ramps(10), ["a", "b"])
    splits = build_splits(DataConfig(name="x", augment=True, hflip=False, num_workers=0), DC, raw=raw)
    assert not any(isinstance(t, T.RandomHorizontalFlip) for t in splits.train.transform.transforms)
    x = torch.stack([splits.train[i][0] for i in range(len(splits.train)) for _ in range(4)])
    assert not _flipped(x).any()
    splits = build_splits(DataConfig(name="x", augment=True, hflip=True, num_workers=0), DC, raw=raw)
    assert any(isinstance(t, T.RandomHorizontalFlip) for t in splits.train.transform.transforms)


def test_hflip_and_crop_scale_are_checked():
    assert DataConfig(hflip="false").hflip is False
    with pytest.raises(ConfigError, match="data.hflip"):
        DataConfig(hflip="sometimes")
    for bad in (0, 1.5, -0.1):
        with pytest.raises(ConfigError, match="data.crop_scale"):
            DataConfig(crop_scale=bad)
    assert DataConfig(crop_scale=1).crop_scale == 1.0


def test_protocol_and_console_name_the_augmentation_used():
    from adaptertune.cli.main import _augment_source
    from adaptertune.runs.summary import augment_label

    cases = [
        ({}, "none"),  # the default: no augmentation
        ({"augment": True}, "rrc+flip"),  # the label runs recorded before data.hflip existed
        ({"augment": True, "hflip": False}, "rrc"),
        ({"augment": True, "hflip": False, "crop_scale": 0.5}, "rrc(0.5)"),
        ({"augment": True, "aug": "randaug"}, "rrc+flip+rand-m9-mstd0.5+erase0.25"),
        ({"augment": True, "aug": "randaug", "hflip": False}, "rrc+rand-m9-mstd0.5+erase0.25"),
        ({"augment": True, "aug": "none"}, "none"),
    ]
    for keys, label in cases:
        assert augment_label(DataConfig(**keys)) == label, keys
    assert "flips off" in _augment_source(DataConfig(augment=True, hflip=False))
    assert "flips on" in _augment_source(DataConfig(augment=True))
    assert "eval transform" in _augment_source(DataConfig())
