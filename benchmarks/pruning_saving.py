"""What successive halving saves against the full grid, and whether it picks the same values (issue 25, item 1).

For a sweep folder whose tuning ran WITHOUT a pruner (the full grid, trained out), every tuning group
(``<results>/tune/<group>/``) is replayed through the pruner (``sweeps/tuning_runs.replay_group``: the live
pruner fed the runs' validation curves in plan order, which is what a pruned search trains and picks: training
is deterministic, a pruned run is a prefix of the unpruned one). Per group it prints the full grid's epochs and
seconds, the pruned search's, the saving, whether the pick is the same, and the validation accuracy (best epoch,
trained out) of the pruned pick against the full pick. Seconds are the runs' summed ``epoch_seconds``
(``metrics.jsonl``) over the epochs each search trains.

For a sweep whose tuning ran WITH the pruner it prints what each search spent (its tuning record) and the full
grid's bound (a pruned run's remaining epochs are unknown, at most cap - pruned epoch each).

A group is found through the tuning record (``summary.json`` ``tuning``) of a finished tuned point that names it.

    PYTHONPATH=src python benchmarks/pruning_saving.py results/paper-cpu --reduction 3 --min-epochs 2
"""

from __future__ import annotations

import argparse
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from adaptertune.config_keys import get_dotted
from adaptertune.errors import AdapterTuneError
from adaptertune.reports.tuning_table import search_cost
from adaptertune.runs import folder as rf
from adaptertune.runs.summary import RunStatus
from adaptertune.sweeps.sweep import SweepPoint
from adaptertune.sweeps.tuning_runs import TUNE_DIR, TuneGroup, TuneRun, replay_group
from adaptertune.sweeps.tuning_spec import Halving, combinations


@dataclass(frozen=True)
class Saving:
    """One full-grid group replayed through the pruner."""

    group: str
    runs: int
    full_epochs: int
    full_seconds: float
    pruned_epochs: int
    pruned_seconds: float
    same_pick: bool
    pruned_pick: dict[str, float]
    full_pick: dict[str, float]
    pruned_pick_val: float  # best validation top-1 of the pruned pick's run, trained out
    full_pick_val: float


def tuning_records(results_dir: Path) -> dict[str, dict[str, Any]]:
    """``tune/<group>`` -> the tuning record of the first finished tuned point (by folder name) that names it."""
    records: dict[str, dict[str, Any]] = {}
    for summary in sorted(results_dir.rglob(rf.SUMMARY_FILE)):
        run_dir = summary.parent
        if TUNE_DIR in run_dir.relative_to(results_dir).parts:
            continue
        state = rf.read_state(run_dir)
        if state.status is RunStatus.SUCCESS and state.summary.tuning:
            records.setdefault(state.summary.tuning["runs"], state.summary.tuning)
    return records


def group_of(results_dir: Path, record: dict[str, Any]) -> TuneGroup:
    """The search a tuning record names, rebuilt from its run folders (their ``config.yaml``) in plan order.

    Raises:
        AdapterTuneError: a combination of the record's grid at one of its seeds has no run folder.
    """
    name = record["runs"].split("/", 1)[1]
    budget = record["budget"]
    group = TuneGroup(
        name, record["grid"], int(budget["epochs"]), tuple(budget["seeds"]), early_stop=budget.get("early_stop")
    )
    found = {}
    for run_dir in sorted(p for p in (results_dir / record["runs"]).iterdir() if (p / rf.CONFIG_FILE).is_file()):
        config = rf.read_state(run_dir).config or {}
        key = (tuple(float(get_dotted(config, k)) for k in record["keys"]), int(get_dotted(config, "train.seed")))
        found[key] = (run_dir, config)
    for combo in combinations(group.grid):  # the plan's order: combinations, then seeds
        for seed in group.seeds:
            if (hit := found.get((tuple(combo.values()), seed))) is None:
                raise AdapterTuneError(f"{record['runs']} has no run for {combo} at seed {seed}")
            run_dir, config = hit
            point = SweepPoint(f"{record['runs']}/{run_dir.name}", {**combo, "train.seed": seed}, config)
            group.runs.append(TuneRun(point, run_dir, combo, seed))
    return group


def _seconds(run_dir: Path, epochs: int) -> float:
    """Summed ``epoch_seconds`` of the run's first ``epochs`` epochs (nan when one is not recorded)."""
    lines = rf.read_metrics(run_dir)[:epochs]
    if len(lines) < epochs or any("epoch_seconds" not in m for m in lines):
        return math.nan
    return math.fsum(float(m["epoch_seconds"]) for m in lines)


def replay_saving(results_dir: Path, record: dict[str, Any], pruner: Halving) -> Saving:
    """Replay one full-grid search through ``pruner`` (:func:`replay_group`) and measure it."""
    group = group_of(results_dir, record)
    r = replay_group(group, pruner)
    dirs = {tuple(run.combo.values()): run.run_dir for run in group.runs}
    full_runs = {k: len(rf.read_metrics(d)) for k, d in dirs.items()}
    keys = list(group.grid)

    def val(combo: tuple[float, ...]) -> float:
        return float(rf.read_state(dirs[combo]).summary.best_val_acc)

    return Saving(
        group=record["runs"],
        runs=len(group.runs),
        full_epochs=r.full_epochs,
        full_seconds=math.fsum(_seconds(d, full_runs[k]) for k, d in dirs.items()),
        pruned_epochs=r.epochs,
        pruned_seconds=math.fsum(_seconds(dirs[k], run.epochs) for k, run in r.runs.items()),
        same_pick=r.same_pick,
        pruned_pick=dict(zip(keys, r.chosen)),
        full_pick=dict(zip(keys, r.full_chosen)),
        pruned_pick_val=val(r.chosen),
        full_pick_val=val(r.full_chosen),
    )


def _values(values: dict[str, float]) -> str:
    return ", ".join(f"{k.rsplit('.', 1)[-1]} {v:g}" for k, v in values.items())


def _pct(part: float, whole: float) -> str:
    return "-" if not whole or math.isnan(part) or math.isnan(whole) else f"{100 * (1 - part / whole):.0f}%"


def saving_markdown(rows: list[Saving], pruner: Halving) -> str:
    head = (
        f"Full grid replayed through successive halving (min_epochs {pruner.min_epochs}, reduction "
        f"{pruner.reduction}); seconds: summed epoch_seconds; val: best validation top-1 of the pick's run, "
        "trained out.\n\n| group | runs | full grid epochs, s | pruned epochs, s | saving epochs, s | same pick "
        "| pruned pick (val %) | full pick (val %) |\n|---|---:|---|---|---|---|---|---|"
    )
    lines = [head]
    for s in rows:
        saving = f"{_pct(s.pruned_epochs, s.full_epochs)}, {_pct(s.pruned_seconds, s.full_seconds)}"
        lines.append(
            f"| {s.group} | {s.runs} | {s.full_epochs}, {s.full_seconds:.1f} | {s.pruned_epochs}, "
            f"{s.pruned_seconds:.1f} | {saving} "
            f"| {'yes' if s.same_pick else 'no'} | {_values(s.pruned_pick)} ({s.pruned_pick_val:.2f}) "
            f"| {_values(s.full_pick)} ({s.full_pick_val:.2f}) |"
        )
    if len(rows) > 1:
        fe, fs = sum(s.full_epochs for s in rows), math.fsum(s.full_seconds for s in rows)
        pe, ps = sum(s.pruned_epochs for s in rows), math.fsum(s.pruned_seconds for s in rows)
        same = sum(s.same_pick for s in rows)
        lines.append(
            f"| all | {sum(s.runs for s in rows)} | {fe}, {fs:.1f} | {pe}, {ps:.1f} | {_pct(pe, fe)}, {_pct(ps, fs)} "
            f"| {same}/{len(rows)} | | |"
        )
    return "\n".join(lines) + "\n"


def spent_markdown(records: dict[str, dict[str, Any]]) -> str:
    lines = [
        "Searches run with a pruner: what each spent (its tuning record). A pruned run's remaining epochs are "
        "unknown, at most cap - pruned epoch each: the full grid is at most the bound shown.\n",
        "| group | pruner | runs | pruned | spent epochs, s | full grid at most (epochs) | chosen |",
        "|---|---|---:|---:|---|---:|---|",
    ]
    for group, record in records.items():
        cost = search_cost(record)
        lines.append(
            f"| {group} | {cost.pruner} | {cost.runs} | {len(cost.pruned)} | {cost.spent_epochs}, "
            f"{cost.spent_seconds:.1f} | {cost.full_epochs_max} | {_values(cost.chosen)} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("results_dir", type=Path, help="a sweep's results folder (with tune/)")
    ap.add_argument("--reduction", type=int, default=3, help="successive halving's reduction factor (default 3)")
    ap.add_argument("--min-epochs", type=int, default=2, help="the first rung's epoch (default 2)")
    args = ap.parse_args(argv)
    if args.reduction < 2 or args.min_epochs < 1:
        ap.error(f"--reduction must be >= 2 and --min-epochs >= 1, got {args.reduction} and {args.min_epochs}")
    records = tuning_records(args.results_dir)
    if not records:
        print(f"error: no finished tuned point under '{args.results_dir}' (no summary.json with a tuning record)")
        return 1
    pruner = Halving(args.min_epochs, args.reduction)
    full = {g: r for g, r in records.items() if not r.get("pruner")}
    pruned = {g: r for g, r in records.items() if r.get("pruner") and search_cost(r) is not None}
    rows, failed = [], []
    for group, record in full.items():
        try:
            rows.append(replay_saving(args.results_dir, record, pruner))
        except AdapterTuneError as e:  # one line per group that cannot be replayed (e.g. several budget seeds)
            failed.append(f"{group}: not replayed: {e}")
    if rows:
        print(saving_markdown(rows, pruner))
    if pruned:
        print(spent_markdown(pruned))
    for line in failed:
        print(line, file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
