"""benchmarks/pruning_saving.py on a tiny full-grid sweep of the cached linear probe (3 lrs, 3 epochs): replayed
through the pruner and measured against its run folders; a pruned search's record: its spent epochs."""

import importlib.util
import json
import math
import shutil
import sys
from pathlib import Path

import pytest

from adaptertune.sweeps.executors import InProcessExecutor
from adaptertune.sweeps.runner import run_sweep
from adaptertune.sweeps.sweep import SweepSpec
from helpers import TINY_VIT

pytest.importorskip("optuna")

_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "pruning_saving.py"
LRS = [1e-3, 1e-2, 3e-2]  # on image_folder: val 50/50/50, 100/100/100, 75/100/100 (tests/test_pruning.py)
GROUP = "tune/method=linear-probe-cached"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("pruning_saving", _PATH)
    mod = importlib.util.module_from_spec(spec)
    sys.modules["pruning_saving"] = mod  # its dataclasses look their module up
    spec.loader.exec_module(mod)
    yield mod
    del sys.modules["pruning_saving"]


def _spec(root: Path, pruner) -> SweepSpec:
    base = {
        "backbone": TINY_VIT,
        "data": {"name": "imagefolder", "root": str(root), "val_fraction": 0.25, "num_workers": 0},
        "train": {"epochs": 3, "batch_size": 16, "device": "cpu", "warmup_epochs": 0},
    }
    grid = {"method": [{"method": "linear-probe-cached", "tune": {"train.lr": LRS}}]}
    return SweepSpec(name="p", base=base, grid=grid, tune_budget={"pruner": pruner})


@pytest.fixture(scope="module")
def full(image_folder, tmp_path_factory):
    """A full-grid sweep (no pruner), tuning and final run."""
    out = tmp_path_factory.mktemp("full")
    result = run_sweep(_spec(image_folder, "none"), out, InProcessExecutor())
    assert [r.status for r in result.results] == ["success"] * 4, [r.error for r in result.results]
    return out


def _metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_a_full_grid_is_replayed_and_measured_against_its_run_folders(bench, full, capsys):
    assert bench.main([str(full), "--min-epochs", "1", "--reduction", "2"]) == 0
    out = capsys.readouterr().out
    runs = {lr: full / GROUP / f"seed=0,epochs=3,lr={lr:g}" for lr in LRS}
    secs = {lr: [m["epoch_seconds"] for m in _metrics(d)] for lr, d in runs.items()}
    assert [len(s) for s in secs.values()] == [3, 3, 3]
    # halving(1, 2) in plan order: lr 0.03 (75 < 100 at the epoch-1 rung) is pruned after epoch 1; 9 -> 7 epochs
    full_s, pruned_s = math.fsum(sum(s) for s in secs.values()), sum(secs[1e-3]) + sum(secs[1e-2]) + secs[3e-2][0]
    row = next(line for line in out.splitlines() if line.startswith(f"| {GROUP} |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[1:3] == ["3", f"9, {full_s:.1f}"] and cells[3] == f"7, {pruned_s:.1f}"
    assert cells[4] == f"22%, {100 * (1 - pruned_s / full_s):.0f}%" and cells[5] == "yes"
    assert cells[6] == cells[7] == "lr 0.01 (100.00)"
    s = bench.replay_saving(full, bench.tuning_records(full)[GROUP], bench.Halving(1, 2))
    assert (s.full_epochs, s.pruned_epochs, s.same_pick) == (9, 7, True)
    assert (s.full_seconds, s.pruned_seconds) == (pytest.approx(full_s), pytest.approx(pruned_s))
    assert "successive halving (min_epochs 1, reduction 2)" in out


def test_a_pruned_sweep_prints_what_its_searches_spent(bench, full, tmp_path, capsys):
    pruned = tmp_path / "pruned"  # the record a pruned search writes (tests/test_pruning.py checks a live one)
    shutil.copytree(full, pruned)
    final = pruned / "method=linear-probe-cached" / "summary.json"
    summary = json.loads(final.read_text())
    record = summary["tuning"] | {"pruner": {"name": "halving", "min_epochs": 1, "reduction": 2}}
    record["trained"][2] |= {"epochs": 1, "pruned_at_epoch": 1, "train_seconds": 0.5}
    record["trained"][0]["train_seconds"] = record["trained"][1]["train_seconds"] = 2.0
    final.write_text(json.dumps(summary | {"tuning": record}))
    assert bench.main([str(pruned)]) == 0
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if line.startswith(f"| {GROUP} |"))
    # 3 runs, lr 0.03 pruned at epoch 1: 7 epochs spent, the full grid at most 7 + (3 - 1)
    assert row == f"| {GROUP} | halving (min epochs 1, reduction 2) | 3 | 1 | 7, 4.5 | 9 | lr 0.01 |"
    assert "Full grid replayed" not in out and "at most cap - pruned epoch each" in out


def test_a_group_that_cannot_be_replayed_is_named(bench, full, tmp_path, capsys):
    shutil.copytree(full, tmp_path / "r")
    shutil.rmtree(tmp_path / "r" / GROUP / "seed=0,epochs=3,lr=0.01")
    assert bench.main([str(tmp_path / "r")]) == 1
    err = capsys.readouterr().err
    assert f"{GROUP}: not replayed: {GROUP} has no run for {{'train.lr': 0.01}} at seed 0" in err
    assert bench.main([str(tmp_path / "nothing")]) == 1
    assert "no finished tuned point" in capsys.readouterr().out
