"""Shared fixtures: offline hub, a tiny ViT, a tiny generated ImageFolder dataset."""

from __future__ import annotations

import os
from pathlib import Path

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
    from adaptertune.sweeps.presets import make_demo_folder  # after HF_HUB_OFFLINE is set

    return make_demo_folder(root, n_classes, n_train, n_test, seed, size)


@pytest.fixture(scope="session")
def image_folder(tmp_path_factory) -> Path:
    return make_image_folder(tmp_path_factory.mktemp("imagefolder"))
