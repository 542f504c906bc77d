"""A folder dataset's data path with and without ``data.cache`` (data/cache.py): images/s of the loader alone.

Generates an ImageFolder of JPEG files (ImageNet-like 500 x 375 by default), then times, in one process and
interleaved rounds (compare the ratios; the machine is shared): the per-image DataLoader (PIL decode +
transforms in the default worker count) and the cached split (memory-mapped squares, transformed in batches
on the CPU by the training process), each with augmentation (random-resized-crop + flip) and without. Also
the one-off cache build. The model is not run: these are the rates the data path can feed a model at.

    HF_HUB_OFFLINE=1 python benchmarks/folder_cache.py --images 512 --size 224 --rounds 3
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from datapath import timed  # benchmarks/ is on sys.path when a script in it runs

from adaptertune.config import DataConfig
from adaptertune.data import build_splits
from adaptertune.data.loaders import make_loader

CPU = torch.device("cpu")


def make_jpeg_folder(root: Path, n: int, width: int, height: int, classes: int = 4) -> Path:
    from PIL import Image

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:height, 0:width]
    for split, count in (("train", n), ("test", max(classes, n // 8))):
        for i in range(count):
            d = root / split / f"c{i % classes}"
            d.mkdir(parents=True, exist_ok=True)
            # smooth content plus noise: JPEG sizes like a photo's, not white noise's
            phase = rng.uniform(0, 6.3, 3)
            img = np.stack([128 + 90 * np.sin(xx / (17 + 9 * c) + yy / 23 + phase[c]) for c in range(3)], -1)
            img = np.clip(img + rng.normal(0, 12, img.shape), 0, 255).astype(np.uint8)
            Image.fromarray(img).save(d / f"{i}.jpg", quality=90)
    return root


def splits(root: Path, dc: dict, augment: bool, cache: str | None):
    return build_splits(DataConfig(root=str(root), val_fraction=0.0, augment=augment, cache=cache), dc)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=512)
    p.add_argument("--src-size", default="500x375", help="WIDTHxHEIGHT of the generated JPEG files")
    p.add_argument("--size", type=int, default=224, help="model input size")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=1, help="torch threads of the main process")
    p.add_argument("--workers", type=int, default=None, help="per-image DataLoader workers (default: the machine's)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    width, height = (int(v) for v in args.src_size.split("x"))
    dc = {"input_size": (3, args.size, args.size), "interpolation": "bicubic", "mean": (0.485, 0.456, 0.406),
          "std": (0.229, 0.224, 0.225), "crop_pct": 0.875}  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        root = make_jpeg_folder(Path(tmp) / "folder", args.images, width, height)
        t0 = time.perf_counter()
        cached = {aug: splits(root, dc, aug, str(Path(tmp) / "cache")) for aug in (True, False)}
        build_s = time.perf_counter() - t0
        plain = {aug: splits(root, dc, aug, None) for aug in (True, False)}
        loaders = {}
        for aug in (True, False):
            tag = "aug" if aug else "noaug"
            loaders[f"files_{tag}"] = make_loader(plain[aug].train, args.batch_size, args.workers, CPU, True, 0)
            loaders[f"cache_{tag}"] = make_loader(cached[aug].train, args.batch_size, args.workers, CPU, True, 0)
        assert all(type(v).__name__ == "ArrayLoader" for k, v in loaders.items() if k.startswith("cache"))
        rates: dict[str, list[float]] = {k: [] for k in loaders}
        for r in range(args.rounds + 1):  # round 0 warms the workers up and is dropped
            for name, loader in loaders.items():
                v = timed(loader, None, r)  # the loader alone
                if r:
                    rates[name].append(v)
        med = {k: statistics.median(v) for k, v in rates.items()}
        out = {
            "what": "training loader images/s alone (median of interleaved rounds); cache = data.cache + batched",
            "files": f"{args.images} JPEG {width}x{height}",
            "input_size": args.size,
            "cache_side": int(cached[True].train.source.images.shape[1]),
            "cache_build_seconds": round(build_s, 1),
            "cache_mb": round(cached[True].train.source.images.nbytes / 2**20, 1),
            "batch_size": args.batch_size,
            "threads": args.threads,
            "workers": loaders["files_aug"].num_workers,
            "images_per_second": {k: round(v, 1) for k, v in med.items()},
            "speedup": {tag: round(med[f"cache_{tag}"] / med[f"files_{tag}"], 2) for tag in ("aug", "noaug")},
            "raw": {k: [round(x, 1) for x in v] for k, v in rates.items()},
        }
    json.dump(out, sys.stdout, indent=1)
    print()


if __name__ == "__main__":
    main()
