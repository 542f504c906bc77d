"""Fixtures: an offline hub, the tiny ViT, config factories, a generated ImageFolder, a finished tiny run.

Plain helpers (constants, file writers) are in helpers.py; test files import those, never this file.
"""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path

import pytest
import torch

os.environ["HF_HUB_OFFLINE"] = "1"  # an accidental hub call fails at once
torch.set_num_threads(min(2, os.cpu_count() or 1))

from helpers import TINY_VIT, TINY_VIT_TIMM, make_image_folder  # noqa: E402 (after HF_HUB_OFFLINE is set)

# what `train_config()` fills in: a short CPU fit (each test overrides what it is about)
FIT_DEFAULTS = {"epochs": 1, "lr": 0.01, "weight_decay": 0.0, "device": "cpu"}


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture
def one_thread():
    """One torch thread for the test: its models are tiny, and more threads only fight over a busy machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


# ---------------------------------------------------------------- the tiny ViT
@pytest.fixture(scope="session")
def tiny_vit():
    """Factory: ``tiny_vit(num_classes=10, seed=0)`` is TINY_VIT's timm model in eval mode, built by timm after
    ``torch.manual_seed(seed)`` (``create_backbone``'s random init, body and head drawn apart, gives other weights)."""
    import timm

    def make(num_classes: int = 10, seed: int = 0) -> torch.nn.Module:
        torch.manual_seed(seed)
        return timm.create_model(TINY_VIT_TIMM["name"], **TINY_VIT_TIMM["args"], num_classes=num_classes).eval()

    return make


# ---------------------------------------------------------------- configs
@pytest.fixture(scope="session")
def train_config():
    """Factory: ``train_config(**fields)`` is a resolved TrainConfig (what ``fit`` takes): FIT_DEFAULTS with
    ``fields`` replaced, warm-up, device and precision decided by ``resolve_train_config``."""
    from adaptertune.config import TrainConfig
    from adaptertune.resolve import resolve_train_config

    def make(**fields) -> TrainConfig:
        return resolve_train_config(TrainConfig(**{**FIT_DEFAULTS, **fields}))

    return make


@pytest.fixture(scope="session")
def run_config():
    """Factory: ``run_config(root, out, method="adapter", adapter=None, data=None, backbone=TINY_VIT, **train)``
    is a RunConfig of TINY_VIT on the ImageFolder at ``root`` (loaded in-process), writing to ``out``; ``data``
    adds to the data section, ``train`` is the train section. Built from copies of the arguments."""
    from adaptertune.config import RunConfig

    def make(
        root: Path | str,
        out: Path | str,
        method: str = "adapter",
        *,
        adapter: dict | None = None,
        data: dict | None = None,
        backbone: dict = TINY_VIT,
        **train,
    ) -> RunConfig:
        d = {
            "backbone": backbone,
            "data": {"name": "imagefolder", "root": str(root), "num_workers": 0, **(data or {})},
            "method": method,
            "train": train,
            "out_dir": str(out),
        }
        d = {**d, "adapter": adapter} if adapter is not None else d
        return RunConfig.from_dict(copy.deepcopy(d))  # a test may edit its config: the callers' dicts stay as they are

    return make


# ---------------------------------------------------------------- data and runs
@pytest.fixture(scope="session")
def image_folder(tmp_path_factory) -> Path:
    """4 classes x (12 train + 4 test) PNG images of 36 px (helpers.make_image_folder), shared by the session."""
    return make_image_folder(tmp_path_factory.mktemp("imagefolder"))


@pytest.fixture(scope="session")
def tiny_run():
    """Factory: ``tiny_run(out_dir, method, adapter=None, n_classes=4, seed=0, backbone=TINY_VIT)`` writes a
    finished run folder without training (config.yaml, summary.json and the adapter file, as ``run()`` does,
    with every trainable tensor moved by seeded noise) and returns ``(folder, model in eval mode)``."""
    import yaml

    from adaptertune.config import RunConfig
    from adaptertune.engine import save_tensors
    from adaptertune.resolve import resolve_run
    from adaptertune.runs import RunStatus, RunSummary
    from adaptertune.runs.adapter_file import file_metadata

    def make(
        out_dir: Path,
        method: str,
        adapter: dict | None = None,
        n_classes: int = 4,
        seed: int = 0,
        backbone: dict = TINY_VIT,
    ) -> tuple[Path, torch.nn.Module]:
        d = {
            "backbone": backbone,
            "data": {"name": "imagefolder", "root": "unused"},
            "method": method,
            "adapter": adapter,
            "train": {"seed": seed},
            "out_dir": str(out_dir),
        }
        rr = resolve_run(RunConfig.from_dict(copy.deepcopy(d)))
        cfg = rr.config
        built, model = rr.build_model(n_classes)
        gen = torch.Generator().manual_seed(100 + seed)
        trained = {n: p for n, p in model.named_parameters() if p.requires_grad}
        with torch.no_grad():  # "training": every trainable tensor moves, zero-init ones included
            for p in trained.values():
                p.add_(0.05 * torch.randn(p.shape, generator=gen))
        out_dir.mkdir(parents=True, exist_ok=True)
        classes = [f"c{i}" for i in range(n_classes)]
        save_tensors(out_dir / "adaptertune_weights.safetensors", trained, file_metadata(cfg, built, classes, model))
        (out_dir / "config.yaml").write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
        summary = RunSummary(RunStatus.SUCCESS, method, cfg.backbone.name, "imagefolder", seed=seed, test_acc=50.0)
        summary.protocol = {"dataset": "imagefolder"}
        summary.weights_tag, summary.weights_sha256 = built.weights_tag, built.weights_sha256
        summary.weights_source = built.weights_source  # as a real run records them (the export's provenance)
        (out_dir / "summary.json").write_text(json.dumps(summary.to_dict()))
        return out_dir, model.eval()

    return make


# ---------------------------------------------------------------- the Hugging Face cache
@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    """An empty HF cache as HF_HUB_CACHE (huggingface_hub reads the variable at import, so its constant too)."""
    import huggingface_hub.constants as hf_constants

    cache = tmp_path / "hf-cache"
    cache.mkdir()
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(cache))
    assert hf_constants.HF_HUB_OFFLINE, "conftest sets HF_HUB_OFFLINE=1 before huggingface_hub is imported"
    return cache
