"""Helper for the adapter-file tests: a finished run folder without training (perturbed trainable tensors)."""

from __future__ import annotations

import json
from pathlib import Path

import torch
import yaml
from torch import nn

from adaptertune.config import RunConfig
from adaptertune.engine import save_tensors
from adaptertune.resolve import resolve_run
from adaptertune.runs import RunStatus, RunSummary
from adaptertune.runs.adapter_file import file_metadata

TINY = {"name": "vit_tiny_patch16_224", "args": {"img_size": 32, "patch_size": 4}, "pretrained": False}


def make_run(
    out_dir: Path, method: str, adapter: dict | None = None, n_classes: int = 4, seed: int = 0, backbone: dict = TINY
) -> tuple[Path, nn.Module]:
    """Write config.yaml, summary.json and the adapter file as ``run()`` does; return (folder, model)."""
    rr = resolve_run(
        RunConfig.from_dict(
            {
                "backbone": backbone,
                "data": {"name": "imagefolder", "root": "unused"},
                "method": method,
                "adapter": adapter,
                "train": {"seed": seed},
                "out_dir": str(out_dir),
            }
        )
    )
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
    summary.weights_source = built.weights_source
    (out_dir / "summary.json").write_text(json.dumps(summary.to_dict()))
    return out_dir, model.eval()
