"""Rank advice re-scored on six tasks: accuracy lost against the best rank, and parameters spent (issue 26).

Every advisor names one rank per task before (or instead of) a rank sweep; each is scored on the task's
separate sweep (``benchmarks/rank_validation.py``: r = 1..64, 3 seeds, 1000 test images; lfw 50) by

- **loss**: mean test accuracy of the best swept rank minus that of the advised rank (points, mean over the
  3 seeds; the best is picked on the same runs, so every advisor's loss is biased up by the same amount);
- **params**: trainable parameters at the advised rank (adapters + head), as log2 of their ratio to r = 64.

Advised ranks off the grid go to the nearest swept rank on a log scale (and 64 above it); "head-only may
suffice" counts as r = 1 (no head-only run at this protocol). Advisors:

- ``gradient (null)``: ``advise-rank`` (default: the gradient-energy advice, tested against permuted labels);
- ``energy rule``: ``advise-rank --permutations 0`` (smallest r with E(r) >= 0.9);
- ``constant (LOO)``: the geometric mean of the *other* tasks' effect-rule elbows (delta 1 point; "not
  reached" counts as 64) on their separate sweeps;
- ``one nested run``: the seed-0 nested run of ``benchmarks/nested_validation.py`` read on its 256
  validation images: the smallest rank within ``delta`` = 1 point of its best rank (lfw, with no validation
  images, is read on its 50 test images: a leak, shown in the table);
- ``three nested runs``: the effect-rule elbow over the validation curves of the three nested runs;
- ``largest (64)``, ``smallest (1)``: fixed references.

Paired 95% t-intervals over the tasks (5 df) compare each advisor with the one-nested-run advisor.

    python benchmarks/advisor_scores.py --nested runs/nested-validation --separate runs/rank-validation
    python benchmarks/advisor_scores.py --nested results/science/nested-validation   # from the committed CSVs
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np
from nested_validation import COMMITTED, effect_elbow, nested_rows, separate_rows, t_interval
from rank_validation import FULL, TASKS

from adaptertune.analysis.elbow_effect import DEFAULT_DELTA

GRID = list(FULL["ranks"])


def on_grid(r: int | None) -> int:
    """The swept rank nearest ``r`` on a log scale (1 for None: head only may suffice)."""
    if not r:
        return GRID[0]
    return min(GRID, key=lambda g: (abs(math.log2(g) - math.log2(r)), g))


def advice_json(task: str, kind: str, separate: Path | None) -> dict:
    for d in ([separate / task] if separate else []) + [None]:
        path = d / f"advice-{kind}.json" if d else COMMITTED / f"{task}-advice-{kind}.json"
        if path.exists():
            return json.loads(path.read_text())
    raise SystemExit(f"{task}: no {kind} advice found")


def sweep_means(rows: list[dict[str, str]]) -> tuple[dict[int, float], dict[int, int], list[tuple[int, int, float]]]:
    """Mean test accuracy and trainable parameters per rank, and the (rank, seed, acc) points."""
    pts = [(int(r["rank"]), int(r["seed"]), float(r["test_acc"])) for r in rows if r["status"] == "success"]
    means = {g: float(np.mean([a for r, _, a in pts if r == g])) for g in GRID}
    params = {int(r["rank"]): int(r["trainable_params"]) for r in rows}
    return means, params, pts


def effect_label(pts: list[tuple[int, int, float]]) -> int:
    """The effect-rule elbow of ``pts`` as a rank ("not reached" and "inconclusive" count as the largest)."""
    res = effect_elbow(pts)
    return res.elbow if res.elbow is not None else GRID[-1]


def nested_choice(task: str, nested: Path) -> tuple[int, int, str]:
    """(one run's choice, three runs' effect-rule choice, the split read) from the nested runs' curves."""
    rows = [r for r in nested_rows(task, nested) if int(r["rank"]) >= 1]
    split = "val_acc" if rows and rows[0].get("val_acc") not in (None, "") else "test_acc"
    one = {int(r["rank"]): float(r[split]) for r in rows if int(r["seed"]) == 0}
    best = max(one.values())
    pick = min(r for r, a in one.items() if a >= best - DEFAULT_DELTA)
    three = effect_label([(int(r["rank"]), int(r["seed"]), float(r[split])) for r in rows])
    return pick, three, split.replace("_acc", "")


def scores(
    sweeps: dict[str, tuple[dict[int, float], dict[int, int], list]], picks: dict[str, dict[str, int]]
) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """Per advisor, per task (in ``picks``' order): accuracy lost against the best swept rank (points) and
    log2(trainable parameters at the advised rank / at the largest swept rank)."""
    tasks = list(picks)
    names = list(picks[tasks[0]])
    top = max(GRID)
    loss = {a: [max(sweeps[t][0].values()) - sweeps[t][0][picks[t][a]] for t in tasks] for a in names}
    lpar = {a: [math.log2(sweeps[t][1][picks[t][a]] / sweeps[t][1][top]) for t in tasks] for a in names}
    return loss, lpar


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nested", type=Path, required=True, help="benchmarks/nested_validation.py --out folder")
    ap.add_argument("--separate", type=Path, default=None, help="rank_validation.py --out folder run here")
    ap.add_argument("--out", type=Path, default=None, help="write advisor-scores.md here (default: --nested)")
    args = ap.parse_args()
    sweeps = {t: sweep_means(separate_rows(t, args.separate)) for t in TASKS}
    elbows = {t: effect_label(s[2]) for t, s in sweeps.items()}
    picks: dict[str, dict[str, int]] = {}
    split_read = {}
    for t in TASKS:
        others = [math.log2(elbows[o]) for o in TASKS if o != t]
        one, three, split_read[t] = nested_choice(t, args.nested)
        picks[t] = {
            "gradient (null)": on_grid(advice_json(t, "null", args.separate)["advised_rank"]),
            "energy rule": on_grid(advice_json(t, "energy", args.separate)["advised_rank"]),
            "constant (LOO)": on_grid(round(2 ** (sum(others) / len(others)))),
            "one nested run": one,
            "three nested runs": three,
            "largest (64)": GRID[-1],
            "smallest (1)": GRID[0],
        }
    names = list(picks[TASKS[0]])
    loss, lpar = scores(sweeps, picks)
    lines = ["## Advised rank per task (effect-rule elbow of the separate sweep, delta 1, for reading)", "",
             "| task | best rank | elbow | " + " | ".join(names) + " | nested read on |",
             "|---|---:|---:|" + "---:|" * len(names) + "---|"]  # fmt: skip
    for t in TASKS:
        best = max(GRID, key=lambda g: sweeps[t][0][g])
        lines.append(f"| {t} | {best} | {elbows[t]} | " + " | ".join(str(picks[t][a]) for a in names)
                     + f" | {split_read[t]} |")  # fmt: skip
    lines += ["", "## Scores over the six tasks (mean [95% t-interval over tasks])", "",
              "| advisor | accuracy lost vs best rank (points) | log2(params / params at r=64) | "
              "loss minus one nested run's (paired) |", "|---|---:|---:|---:|"]  # fmt: skip
    ref = "one nested run"
    for a in names:
        m, lo, hi = t_interval(loss[a])
        pm, plo, phi = t_interval(lpar[a])
        dm, dlo, dhi = t_interval([x - y for x, y in zip(loss[a], loss[ref])])
        diff = "(reference)" if a == ref else f"{dm:+.2f} [{dlo:+.2f}, {dhi:+.2f}]"
        lines.append(f"| {a} | {m:.2f} [{lo:.2f}, {hi:.2f}] | {pm:+.2f} [{plo:+.2f}, {phi:+.2f}] | {diff} |")
    lines += ["", "Per-task losses (points): " + "; ".join(
        f"{a}: " + ", ".join(f"{x:.2f}" for x in loss[a]) for a in names)]  # fmt: skip
    text = "\n".join(lines)
    out = args.out or args.nested
    (out / "advisor-scores.md").write_text(text + "\n")
    (out / "advisor-scores.json").write_text(json.dumps({"picks": picks, "loss": loss, "log2_params": lpar}, indent=2))
    print(text)


if __name__ == "__main__":
    main()
