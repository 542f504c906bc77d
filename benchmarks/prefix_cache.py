"""Epoch time with ``train.cache_prefix`` vs without, adapters on ``last:4`` of DINOv2-S/14 at 56 px.

One process, interleaved rounds (shared machine: read the ratio). Augmentation off (the cache needs it).
Uncached: images through the whole model every epoch. Cached: the frozen prefix (patch embedding + blocks
0..7) once (``extract_seconds``), then each epoch trains blocks 8..11 + head on the cached tokens. The
per-epoch ratio is the steady-state speedup; ``speedup_over_E_epochs`` counts the one-off extraction too.

    HF_HUB_OFFLINE=1 python benchmarks/prefix_cache.py --images 256 --batch-size 32 --rounds 3
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import numpy as np
import torch

from adaptertune.data.base import SplitView
from adaptertune.data.loaders import make_loader
from adaptertune.data.transforms import build_transforms
from adaptertune.engine.cached import TensorLoader
from adaptertune.engine.prefix import PrefixTail, cacheable_prefix, extract_prefix
from adaptertune.methods import METHODS, build_method
from adaptertune.methods.adapter import AdapterConfig

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from datapath import CPU, images, stepper  # noqa: E402


def build(size: int, placement: str):
    import timm

    torch.manual_seed(0)
    model = timm.create_model("vit_small_patch14_dinov2", pretrained=False, img_size=size, num_classes=10)
    model = build_method("adapter", model, AdapterConfig(rank=16, placement=placement))
    return model, {**timm.data.resolve_data_config({}, model=model), "input_size": (3, size, size)}


def epoch_seconds(loader, step, epoch: int) -> float:
    loader.sampler.set_epoch(epoch)
    t0 = time.perf_counter()
    for x, y, _ in loader:
        step(x, y)
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=256)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--size", type=int, default=56)
    p.add_argument("--placement", default="last:4")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--epochs", type=int, default=20, help="E for the speedup including the extraction")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    src, data_name = images(args.images)
    plain, dc = build(args.size, args.placement)
    cached, _ = build(args.size, args.placement)
    view = SplitView(src, np.arange(len(src)), build_transforms(dc, augment=False)[0])
    image_loader = make_loader(view, args.batch_size, 0, CPU, shuffle=True, seed=0)
    k = cacheable_prefix(cached, METHODS.get("adapter").frozen_prefix(cached, AdapterConfig(placement=args.placement)))
    t0 = time.perf_counter()
    tokens, labels, _, _ = extract_prefix(cached, k, make_loader(view, args.batch_size, 0, CPU), CPU)
    extract = time.perf_counter() - t0
    token_loader = TensorLoader(tokens, labels, args.batch_size, shuffle=True, seed=0)
    tail = PrefixTail(cached, k).train()
    plain.train()
    steps = {"uncached": (image_loader, stepper(plain)), "cached": (token_loader, stepper(tail))}
    for loader, step in steps.values():  # warm-up
        x, y, _ = next(iter(loader))
        step(x, y)
    seconds: dict[str, list[float]] = {name: [] for name in steps}
    for r in range(args.rounds):
        for name, (loader, step) in steps.items():
            seconds[name].append(epoch_seconds(loader, step, r + 1))
    med = {k: statistics.median(v) for k, v in seconds.items()}
    e = args.epochs
    out = {
        "what": "seconds per training epoch (median of interleaved rounds), frozen prefix cached vs not",
        "model": f"vit_small_patch14_dinov2 {args.size}px, adapter r=16 placement {args.placement}, random init",
        "first_trained_block": k,
        "data": data_name,
        "images_per_epoch": args.images,
        "batch_size": args.batch_size,
        "threads": args.threads,
        "epoch_seconds": {k: round(v, 3) for k, v in med.items()},
        "extract_seconds": round(extract, 3),
        "speedup_per_epoch": round(med["uncached"] / med["cached"], 2),
        f"speedup_over_{e}_epochs": round(e * med["uncached"] / (extract + e * med["cached"]), 2),
        "raw": {k: [round(x, 3) for x in v] for k, v in seconds.items()},
    }
    json.dump(out, sys.stdout, indent=1)
    print()


if __name__ == "__main__":
    main()
