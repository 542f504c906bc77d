"""Nested ranks against independently trained rank sweeps, on the six tasks of the rank validation (issue 26).

Per task, three nested AdapterTune runs (``adapter.nested: true``, rank 64, seeds 0, 1, 2) at the protocol of
``benchmarks/rank_validation.py`` (DINOv2-S/14 at 56 px, 512 training images, 4 epochs of batch 32, lr 1e-3,
1000 test images; lfw: its 150 training and 50 test images), each evaluated at r = 0, 1, 2, ..., 64 from its
own weights (``rank_curve.csv``), against the separate sweep of the same tasks, seeds and ranks (21 runs per
task: the committed ``results/science/rank-validation/TASK-results.csv``, or ``--separate DIR`` where a task's
sweep was run again). The nested runs also hold out 256 validation images drawn from outside the training
subset (the training images are the same; the run tests its best-validation epoch at full rank), which the
nested rank advice of ``benchmarks/advisor_scores.py`` reads; lfw has no images left for it.

Printed and written (``OUT/nested-vs-separate.md``, ``.csv``):
- per task and rank: the mean over seeds of (nested - separate) test accuracy, paired by seed, with its
  95% t-interval (2 df); and pooled over tasks (the interval over the six task means, 5 df);
- the effect-size elbow (delta 1 point, ``analysis.elbow_effect``) of each curve, and whether they agree;
- the cost: a nested run's wall time (training + the rank curve) against the sweep's summed run times.

    python benchmarks/nested_validation.py --out runs/nested-validation            # 18 runs, ~25 min CPU
    python benchmarks/nested_validation.py --out results/science/nested-validation --no-run   # tables from the CSVs
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np
from rank_validation import FULL, TASKS, _spec, run_spec

from adaptertune.analysis.elbow_effect import DEFAULT_DELTA, EffectElbow, fit_effect_elbow
from adaptertune.analysis.elbow_table import read_rows as read_csv
from adaptertune.atomic import atomic_write_csv
from adaptertune.reports.stats import t_interval as _t_bounds

COMMITTED = Path(__file__).resolve().parents[1] / "results" / "science" / "rank-validation"
VAL_IMAGES = 256


def nested_spec(task: str, p: dict) -> dict:
    """The rank validation's sweep of ``task`` as nested runs: one rank-64 run per seed."""
    spec = _spec(task, p)
    spec["name"] = f"nested-validation-{task}"
    spec["meta"]["description"] = f"nested ranks 1..{max(p['ranks'])} from one run per seed: {task}"
    base = spec["base"]
    base["adapter"] = {"rank": max(p["ranks"]), "nested": True, "nested_ranks": list(p["ranks"])}
    if task != "lfw":  # lfw_subset: every training image is in the subset, none left for validation
        base["data"]["val_subset"] = VAL_IMAGES
    spec["grid"] = {"train.seed": p["seeds"]}
    return spec


def run_nested(task: str, p: dict, out: Path) -> float:
    """Run (or resume) the nested runs of ``task``; the wall seconds this call spent."""
    return run_spec(nested_spec(task, p), out / task, "nested-spec.yaml", "nested")


def separate_rows(task: str, separate: Path | None) -> list[dict[str, str]]:
    """The separate sweep's results.csv rows of ``task`` (a re-run under ``separate`` wins)."""
    if separate is not None and (separate / task / "runs" / "report" / "results.csv").exists():
        return read_csv(separate / task / "runs" / "report" / "results.csv")
    path = COMMITTED / f"{task}-results.csv"
    if not path.exists():
        raise SystemExit(f"{task}: no separate sweep at {path}; run benchmarks/rank_validation.py for it")
    return read_csv(path)


def nested_rows(task: str, out: Path) -> list[dict[str, str]]:
    """Every nested run's rank_curve.csv rows of ``task``, with the run's training seconds (summary) attached;
    without run folders, the flat ``OUT/TASK-rank-curves.csv`` a previous call wrote (the committed copy)."""
    rows = []
    for curve in sorted((out / task / "nested").glob("*/rank_curve.csv")):
        summary = json.loads((curve.parent / "summary.json").read_text())
        for r in read_csv(curve):
            r["train_seconds"] = summary.get("train_seconds")
            rows.append(r)
    flat = out / f"{task}-rank-curves.csv"
    if rows:
        atomic_write_csv(flat, rows)
    elif flat.exists():
        rows = read_csv(flat)
    if not rows:
        raise SystemExit(
            f"{task}: no nested rank curves in {out / task / 'nested'} nor {flat}; run "
            f"benchmarks/nested_validation.py --out {out} (without --no-run)"
        )
    return rows


def table(rows: list[dict[str, str]], acc: str = "test_acc") -> dict[tuple[int, int], float]:
    """{(rank, seed): accuracy} of successful rows."""
    return {(int(r["rank"]), int(r["seed"])): float(r[acc]) for r in rows if r.get("status", "success") == "success"}


def t_interval(x: list[float]) -> tuple[float, float, float]:
    """Mean and two-sided 95% t-interval of ``x`` (``reports.stats.t_interval``; nan bounds for one value)."""
    lo, hi = _t_bounds(x)
    return float(np.mean(x)), *((lo, hi) if math.isfinite(lo) else (math.nan, math.nan))


def effect_elbow(points: list[tuple[int, int, float]]) -> EffectElbow:
    """The effect-rule elbow (delta :data:`DEFAULT_DELTA` = 1 point) of ``(rank, seed, acc)`` points."""
    return fit_effect_elbow(points, delta=DEFAULT_DELTA)


def compare(tasks: list[str], p: dict, out: Path, separate: Path | None, walls: dict[str, float]) -> str:
    ranks, seeds = list(p["ranks"]), list(p["seeds"])
    lines = [
        "## Nested minus separate test accuracy (points), mean over seeds [95% t-interval, paired by seed]",
        "",
        "| task | " + " | ".join(f"r={r}" for r in ranks) + " | elbow separate | elbow nested | agree |",
        "|---|" + "---:|" * len(ranks) + "---:|---:|---|",
    ]
    per_task: dict[int, list[float]] = {r: [] for r in ranks}
    csv_rows, costs = [], []
    for task in tasks:
        sep_rows, nest_rows = separate_rows(task, separate), nested_rows(task, out)
        sep, nest = table(sep_rows), table(nest_rows)
        cells = []
        for r in ranks:
            d = [nest[r, s] - sep[r, s] for s in seeds if (r, s) in nest and (r, s) in sep]
            m, lo, hi = t_interval(d)
            per_task[r].append(m)
            cells.append(f"{m:+.2f} [{lo:+.1f}, {hi:+.1f}]")
            csv_rows.append({"task": task, "rank": r, "n_seeds": len(d), "mean_diff": m, "lo": lo, "hi": hi,
                             "separate_mean": np.mean([sep[r, s] for s in seeds]),
                             "nested_mean": np.mean([nest[r, s] for s in seeds if (r, s) in nest])})  # fmt: skip
        e_sep, e_nest = (str(effect_elbow([(r, s, v) for (r, s), v in t.items() if r in ranks]).label)
                         for t in (sep, nest))  # fmt: skip
        agree = "yes" if e_sep == e_nest else "no"
        lines.append(f"| {task} | " + " | ".join(cells) + f" | {e_sep} | {e_nest} | {agree} |")
        sep_s = sum(float(r["train_seconds"]) for r in sep_rows)
        nest_s = sum(float(r["train_seconds"]) for r in nest_rows if int(r["rank"]) == ranks[-1])
        costs.append((task, sep_s, nest_s, walls.get(task)))
    pooled = [t_interval(per_task[r]) for r in ranks]
    lines.append(
        f"| **pooled over {len(tasks)} tasks** | "
        + " | ".join(f"**{m:+.2f}** [{lo:+.1f}, {hi:+.1f}]" for m, lo, hi in pooled)
        + " | | | |"
    )
    lines += ["", "## Cost: training seconds summed over runs (3 seeds)", "",
              "| task | separate sweep (7 ranks) | nested (1 run per seed) | ratio | nested wall incl. rank curve |",
              "|---|---:|---:|---:|---:|"]  # fmt: skip
    for task, sep_s, nest_s, wall in costs:
        w = f"{wall:.0f} s" if wall else "(not recorded: under 60 s)"
        lines.append(f"| {task} | {sep_s:.0f} s | {nest_s:.0f} s | {sep_s / nest_s:.1f}x | {w} |")
    atomic_write_csv(out / "nested-vs-separate.csv", csv_rows)
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, help="nested runs and the tables go here")
    ap.add_argument("--tasks", default=",".join(TASKS))
    ap.add_argument("--separate", type=Path, default=None, help="a rank_validation.py --out folder re-run here")
    ap.add_argument("--no-run", action="store_true", help="tables from the runs already there")
    args = ap.parse_args()
    out, tasks = Path(args.out), args.tasks.split(",")
    walls_path = out / "walls.json"
    walls = json.loads(walls_path.read_text()) if walls_path.exists() else {}
    if not args.no_run:
        for task in tasks:
            wall = run_nested(task, FULL, out)
            if wall > 60:  # a resumed call that skipped finished runs keeps the first measurement
                walls[task] = wall
                walls_path.write_text(json.dumps(walls, indent=2))
    text = compare(tasks, FULL, out, args.separate, walls)
    (out / "nested-vs-separate.md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
