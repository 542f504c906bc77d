"""The clean capacity test's tables (issue 26, item 3): tuned-lr rank curve, its elbow, and the nested curve.

Reads the run folders of ``benchmarks/capacity-fmnist.yaml`` (separate runs, lr tuned per rank) and
``benchmarks/capacity-nested-fmnist.yaml`` (one nested rank-256 run per seed) and prints, per rank: the lr the
search chose (and whether it is at an end of the 5 values), epochs trained and runs stopped at the cap, test
accuracy of the separate runs (9 seeds) and of the nested runs (10 seeds), their paired difference on the
common seeds (same training subset and validation draw per seed); the effect-rule elbow (delta 1 point) of
each curve (a nested run's rank 0, adapters off, is not head only and is left out); and the cost of each
(training seconds of every run, tuning included). ``--out DIR`` also writes the table and, per seed and
rank, every accuracy it read (``capacity-runs.csv``).

    python benchmarks/capacity_table.py --separate runs/capacity-fmnist --nested runs/capacity-nested-fmnist
    python benchmarks/capacity_table.py --separate runs/capacity-fmnist --nested runs/capacity-nested-lr1e-3
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np
import yaml
from nested_validation import effect_elbow, t_interval

from adaptertune.analysis.elbow_effect import DEFAULT_DELTA
from adaptertune.analysis.elbow_table import read_rows
from adaptertune.atomic import atomic_write_csv


def _runs(root: Path) -> list[tuple[dict, dict]]:
    """(summary, config) of every finished final run directly under ``root`` (tuning runs live in tune/)."""
    out = []
    for s in sorted(root.glob("*/summary.json")):
        summary = json.loads(s.read_text())
        if summary.get("status") == "success":
            out.append((summary, yaml.safe_load((s.parent / "config.yaml").read_text())))
    return out


def _rank(summary: dict) -> int:
    return 0 if summary["method"].startswith("linear-probe") else int(summary["rank"])


def _tuning_runs(root: Path) -> list[tuple[dict, dict]]:
    """(summary, config) of every tuning run of ``root`` (``tune/<search>/<run>``), pruned ones included."""
    return [
        (json.loads(s.read_text()), yaml.safe_load((s.parent / "config.yaml").read_text()))
        for s in sorted(root.glob("tune/*/*/summary.json"))
    ]


def _seconds(root: Path, runs: list[tuple[dict, dict]]) -> tuple[float, float]:
    """Training seconds of the final runs not tested from a tuning run, and of every tuning run."""
    final = sum(s["train_seconds"] for s, _ in runs if not s.get("tested_from"))
    return final, sum(s["train_seconds"] or 0.0 for s, _ in _tuning_runs(root))


def _lr(summary: dict, cfg: dict, searched: list[float]) -> str:
    """The lr a run trained with, ``*`` marking a choice at an end of the values its search tried."""
    lr = cfg["train"]["lr"]
    grid = (summary.get("tuning") or {}).get("grid", {}).get("train.lr") or searched
    return f"{lr:g}" + ("*" if grid and lr in (min(grid), max(grid)) else "")


def separate(root: Path) -> tuple[dict, float, float]:
    """{rank: {"acc": {seed: acc}, "lr", "epochs", "capped"}}, final-run seconds, tuning seconds."""
    cells: dict[int, dict] = {}
    runs = _runs(root)
    for summary, cfg in runs:
        r, cap = _rank(summary), int(cfg["train"]["epochs"])
        c = cells.setdefault(r, {"acc": {}, "epochs": [], "capped": 0, "lr": _lr(summary, cfg, [])})
        c["acc"][int(summary["seed"])] = float(summary["test_acc"])
        trained = summary["stopped_epoch"] or cap
        c["epochs"].append(trained)
        c["capped"] += summary["stopped_epoch"] is None
    return cells, *_seconds(root, runs)


def nested(root: Path) -> tuple[dict[int, dict[int, float]], float, float, str]:
    """{rank: {seed: test acc}} from the nested runs' rank_curve.csv, final and tuning seconds, the lr."""
    curves: dict[int, dict[int, float]] = {}
    for path in sorted(root.glob("seed=*/rank_curve.csv")):
        for row in read_rows(path):
            curves.setdefault(int(row["rank"]), {})[int(row["seed"])] = float(row["test_acc"])
    runs = _runs(root)
    if not runs:
        return curves, 0.0, 0.0, ""
    epochs = [s["stopped_epoch"] or int(c["train"]["epochs"]) for s, c in runs]
    searched = sorted({c["train"]["lr"] for _, c in _tuning_runs(root)})
    lr = f"{_lr(*runs[0], searched)}; epochs trained {', '.join(map(str, epochs))}"
    return curves, *_seconds(root, runs), lr


def elbow(acc: dict[int, dict[int, float]]) -> str:
    """The effect-rule elbow of {rank: {seed: acc}} and its bound (pass a nested curve without its rank 0)."""
    res = effect_elbow([(r, s, a) for r, d in acc.items() for s, a in d.items()])
    return f"{res.label} ({res.interval_label})"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--separate", type=Path, required=True)
    ap.add_argument("--nested", type=Path, required=True)
    ap.add_argument("--out", type=Path, default=None, help="write capacity.md and capacity.csv here")
    args = ap.parse_args()
    sep, sep_final, sep_tune = separate(args.separate)
    nest, nest_final, nest_tune, nest_lr = nested(args.nested)
    if not sep or not nest:
        empty = args.separate if not sep else args.nested
        raise SystemExit(f"No finished runs (summary.json / rank_curve.csv) under {empty}; run its bench spec first.")
    lines = [
        "| rank | lr chosen | epochs trained (runs at the 16-epoch cap) | separate: test % "
        f"({max(len(c['acc']) for c in sep.values())} seeds) | nested: test % "
        f"({len(next(iter(nest.values())))} seeds) | nested - separate, common seeds [95% t] |",
        "|---:|---:|---|---:|---:|---:|",
    ]
    rows = []
    for r in sorted(set(sep) | set(nest)):
        c = sep.get(r)
        n = nest.get(r, {})
        s_acc = list(c["acc"].values()) if c else []
        cell_s = f"{np.mean(s_acc):.2f} ± {np.std(s_acc, ddof=1):.2f}" if len(s_acc) > 1 else "-"
        cell_n = f"{np.mean(list(n.values())):.2f} ± {np.std(list(n.values()), ddof=1):.2f}" if len(n) > 1 else "-"
        common = sorted(set(c["acc"]) & set(n)) if c else []
        d = [n[s] - c["acc"][s] for s in common]
        m, lo, hi = t_interval(d) if d else (math.nan, math.nan, math.nan)
        lr = c["lr"] if c else "-"
        cell_n += " (adapters off, not head only)" if r == 0 and n else ""
        epochs = f"{', '.join(map(str, c['epochs']))} ({c['capped']}/{len(c['epochs'])})" if c else "-"
        diff = f"{m:+.2f} [{lo:+.2f}, {hi:+.2f}]" if d else "-"
        lines.append(f"| {r} | {lr} | {epochs} | {cell_s} | {cell_n} | {diff} |")
        rows.append({"rank": r, "lr": c["lr"] if c else "", "separate_mean": np.mean(s_acc) if s_acc else "",
                     "nested_mean": np.mean(list(n.values())) if n else "", "diff": m, "lo": lo,
                     "hi": hi})  # fmt: skip
    nested_r = {r: d for r, d in nest.items() if r > 0}  # a nested run's rank 0 is not a head-only run
    first3 = nested_r.items()
    lines += [
        "",
        "lr: * marks a choice at an end of the searched values; "
        f"the nested run's lr (searched at full rank): {nest_lr}",
        f"elbow, separate (effect rule, delta {DEFAULT_DELTA:g}): {elbow({r: c['acc'] for r, c in sep.items()})}",
        f"elbow, nested ({len(next(iter(nest.values())))} seeds, rank 0 left out): {elbow(nested_r)}",
        f"elbow, nested (seeds 0-2 only): {elbow({r: {s: a for s, a in d.items() if s < 3} for r, d in first3})}",
        f"cost: separate {sep_final + sep_tune:.0f} s of training ({sep_tune:.0f} s tuning); nested "
        f"{nest_final + nest_tune:.0f} s ({nest_tune:.0f} s tuning) for {len(next(iter(nest.values())))} seeds",
    ]
    text = "\n".join(lines)
    print(text)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "capacity.md").write_text(text + "\n")
        atomic_write_csv(args.out / "capacity.csv", rows)
        runs = [{"curve": "separate", "rank": r, "seed": s, "test_acc": a, "lr": c["lr"]}
                for r, c in sorted(sep.items()) for s, a in sorted(c["acc"].items())]  # fmt: skip
        runs += [{"curve": "nested", "rank": r, "seed": s, "test_acc": a, "lr": nest_lr.split(";")[0]}
                 for r, d in sorted(nest.items()) for s, a in sorted(d.items())]  # fmt: skip
        atomic_write_csv(args.out / "capacity-runs.csv", runs)


if __name__ == "__main__":
    main()
