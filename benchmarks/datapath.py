"""Training images/s end to end: batched array path vs the per-image DataLoader path vs the model's step rate.

One process, interleaved rounds (the machine is shared: compare the ratios, not the absolute rates). The
model is DINOv2-S/14 at 56 px (timm ``vit_small_patch14_dinov2``, random init: the cost does not depend on
the weights) with the ``adapter`` method; the data is Fashion-MNIST (Debian's copy; random 28x28 arrays when
it is absent, same cost). Every configuration trains with the engine's step (perf/step.py), on its own
batches; ``step`` alone reuses one fixed batch (what ``adaptertune speed`` times).

    HF_HUB_OFFLINE=1 python benchmarks/datapath.py --images 256 --batch-size 32 --rounds 3
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

from adaptertune.config import DataConfig
from adaptertune.data import load_raw
from adaptertune.data.base import ArraySource, SplitView
from adaptertune.data.loaders import make_loader
from adaptertune.data.transforms import build_transforms
from adaptertune.engine.optim import build_optimizer
from adaptertune.methods import build_method
from adaptertune.methods.adapter import AdapterConfig

CPU = torch.device("cpu")


def images(n: int) -> tuple[ArraySource, str]:
    try:
        raw = load_raw(DataConfig(name="fashion-mnist"))
        src = raw.train
        return ArraySource(src.images[:n], src.targets[:n]), "fashion-mnist"
    except Exception:  # the data is not on this machine: same-sized random arrays cost the same
        rng = np.random.default_rng(0)
        return ArraySource(rng.integers(0, 256, (n, 28, 28), dtype=np.uint8), [i % 10 for i in range(n)]), "random"


def build(size: int):
    import timm

    torch.manual_seed(0)
    model = timm.create_model("vit_small_patch14_dinov2", pretrained=False, img_size=size, num_classes=10)
    model = build_method("adapter", model, AdapterConfig(rank=16))
    data_config = {**timm.data.resolve_data_config({}, model=model), "input_size": (3, size, size)}
    return model, data_config


def stepper(model):
    opt = build_optimizer(model, lr=1e-4, weight_decay=0.05)
    trainable = [p for p in model.parameters() if p.requires_grad]

    def step(x, y):
        loss = F.cross_entropy(model(x).float(), y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step


def timed(loader, step, epoch: int) -> float:
    """Images/s of one epoch: loader batches through ``step`` (``step`` None: the loader alone)."""
    loader.sampler.set_epoch(epoch)
    n, t0 = 0, time.perf_counter()
    for x, y, _ in loader:
        if step is not None:
            step(x, y)
        n += len(y)
    return n / (time.perf_counter() - t0)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=256)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--size", type=int, default=56)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=1, help="torch threads of the training process")
    p.add_argument("--workers", type=int, default=None, help="per-image DataLoader workers (default: the machine's)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    src, data_name = images(args.images)
    model, dc = build(args.size)
    model.train()
    step = stepper(model)
    views = {aug: SplitView(src, np.arange(len(src)), build_transforms(dc, augment=aug)[0]) for aug in (True, False)}
    loaders = {
        f"{path}_{'aug' if aug else 'noaug'}": make_loader(
            views[aug],
            args.batch_size,
            args.workers,
            CPU,
            shuffle=True,
            seed=0,
            batched="on" if path == "batched" else "off",
        )
        for path in ("batched", "per_image")
        for aug in (True, False)
    }
    x0, y0 = next(iter(loaders["batched_aug"]))[:2]
    for _ in range(2):  # warm-up
        step(x0, y0)
    rates: dict[str, list[float]] = {"step": [], **{k: [] for k in loaders}, **{f"{k}_data_only": [] for k in loaders}}
    for r in range(args.rounds):
        n_steps = -(-args.images // args.batch_size)
        t0 = time.perf_counter()
        for _ in range(n_steps):
            step(x0, y0)
        rates["step"].append(n_steps * args.batch_size / (time.perf_counter() - t0))
        for name, loader in loaders.items():
            rates[name].append(timed(loader, step, r + 1))
            rates[f"{name}_data_only"].append(timed(loader, None, r + 1))
    med = {k: statistics.median(v) for k, v in rates.items()}
    out = {
        "what": "training images/s (median of interleaved rounds); *_vs_step = end-to-end / step-only rate",
        "model": f"vit_small_patch14_dinov2 {args.size}px, adapter r=16 (all blocks), random init",
        "data": data_name,
        "images_per_epoch": args.images,
        "batch_size": args.batch_size,
        "threads": args.threads,
        "per_image_workers": loaders["per_image_aug"].num_workers,
        "rounds": args.rounds,
        "images_per_second": {k: round(v, 1) for k, v in med.items()},
        "ratios": {f"{k}_vs_step": round(med[k] / med["step"], 3) for k in loaders},
        "raw": {k: [round(x, 1) for x in v] for k, v in rates.items()},
    }
    json.dump(out, sys.stdout, indent=1)
    print()


if __name__ == "__main__":
    main()
