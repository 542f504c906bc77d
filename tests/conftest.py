"""Shared fixtures: offline hub, a tiny ViT, a tiny generated ImageFolder dataset."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

os.environ["HF_HUB_OFFLINE"] = "1"  # an accidental hub call fails at once
torch.set_num_threads(min(2, os.cpu_count() or 1))

TINY_VIT = {"name": "vit_tiny_patch16_224", "args": {"img_size": 32, "patch_size": 4}, "pretrained": False}


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def tiny_vit(num_classes: int = 10, seed: int = 0) -> torch.nn.Module:
    import timm

    torch.manual_seed(seed)
    return timm.create_model("vit_tiny_patch16_224", img_size=32, patch_size=4, num_classes=num_classes).eval()


@pytest.fixture
def vit():
    return tiny_vit()


def make_image_folder(
    root: Path, n_classes: int = 4, n_train: int = 12, n_test: int = 4, size: int = 36, seed: int = 0
) -> Path:
    """Class c = a noisy image tinted with colour c (learnable from a few steps). PNG files."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    colours = rng.integers(0, 256, size=(n_classes, 3))
    for split, n in (("train", n_train), ("test", n_test)):
        for c in range(n_classes):
            d = root / split / f"class_{c}"
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                noise = rng.integers(0, 64, size=(size, size, 3))
                img = np.clip(colours[c] * 0.75 + noise, 0, 255).astype(np.uint8)
                Image.fromarray(img).save(d / f"{i}.png")
    return root


@pytest.fixture(scope="session")
def image_folder(tmp_path_factory) -> Path:
    return make_image_folder(tmp_path_factory.mktemp("imagefolder"))
