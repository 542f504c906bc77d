"""Every transfer method under one protocol: accuracy (mean +- std over seeds), trainable parameters, file size.

Same data, split, epochs, batch size and seeds for every method; each method's own lr / weight decay
defaults (``adaptertune list methods``). Runs are written to OUT/<method>/seed<k>; a finished run is reused.

    PYTHONPATH=src python benchmarks/compare_methods.py --backbone vit_tiny_patch16_224 --no-pretrained \
        --backbone-arg img_size=32 --backbone-arg patch_size=4 --dataset imagefolder --data-root data/demo-folder \
        --epochs 3 --out runs/compare-tiny
Prints a markdown table, then one JSON line per method.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
from pathlib import Path

import yaml

from adaptertune.config import RunConfig
from adaptertune.runs import run

METHODS = ["head", "linear-probe-cached", "bitfit", "lora", "parallel", "adapter", "full"]
ADAPTER_METHODS = {"lora", "parallel", "adapter"}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--backbone", required=True)
    p.add_argument("--backbone-arg", action="append", default=[], metavar="K=V")
    p.add_argument("--pretrained", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--dataset", required=True)
    p.add_argument("--data-root", default=None)
    p.add_argument("--subset", type=int, default=None)
    p.add_argument("--test-subset", type=int, default=None)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--rank", type=int, default=16)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--methods", nargs="+", default=METHODS)
    p.add_argument("--augment", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--out", required=True)
    a = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    args = {k: yaml.safe_load(v) for k, v in (s.split("=", 1) for s in a.backbone_arg)}
    rows = []
    for method in a.methods:
        runs = []
        for seed in a.seeds:
            out = Path(a.out) / method / f"seed{seed}"
            done = out / "summary.json"
            if done.is_file() and json.loads(done.read_text()).get("status") == "success":
                runs.append(json.loads(done.read_text()))
                continue
            cfg = RunConfig.from_dict(
                {
                    "backbone": {"name": a.backbone, "pretrained": a.pretrained, "args": args},
                    "data": {
                        "name": a.dataset,
                        "root": a.data_root,
                        "subset": a.subset,
                        "test_subset": a.test_subset,
                        "augment": a.augment,
                        "num_workers": 0,
                    },
                    "method": method,
                    "adapter": {"rank": a.rank} if method in ADAPTER_METHODS else None,
                    "train": {"epochs": a.epochs, "batch_size": a.batch_size, "seed": seed, "device": "cpu"},
                    "out_dir": str(out),
                }
            )
            runs.append(run(cfg, overwrite=True).to_dict())
        accs = [r["test_acc"] for r in runs]
        rows.append(
            {
                "method": method,
                "test_acc_mean": statistics.mean(accs),
                "test_acc_std": statistics.stdev(accs) if len(accs) > 1 else 0.0,
                "seeds": len(accs),
                "trainable_params": runs[0]["trainable_params"],
                "trainable_pct": 100.0 * runs[0]["trainable_params"] / runs[0]["total_params"],
                "adapter_file_bytes": runs[0]["adapter_file_bytes"],
                "train_seconds_mean": statistics.mean(r["train_seconds"] for r in runs),
                "protocol": runs[0]["protocol"],
            }
        )
    print("| method | test acc % (mean +- std) | trainable params | % of total | adapter file | train s |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['method']} | {r['test_acc_mean']:.2f} +- {r['test_acc_std']:.2f} | {r['trainable_params']:,} | "
            f"{r['trainable_pct']:.2f} | {r['adapter_file_bytes'] / 1024:.0f} KiB | {r['train_seconds_mean']:.1f} |"
        )
    for r in rows:
        print(json.dumps(r))


if __name__ == "__main__":
    main()
