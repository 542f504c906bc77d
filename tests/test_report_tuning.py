"""The report's pruned tuning searches (reports/tuning_table.py): what a search cut by a pruner spent against the
full grid, on hand-written tuning records; a search without a pruner reads as before."""

import json
import math

import pytest

from adaptertune.reports.builder import build_report
from adaptertune.reports.tuning_table import SEARCH_NOTE, search_cost
from test_report import write_run

RUNS = ["seed=0,epochs=4,lr=0.001", "seed=0,epochs=4,lr=0.01", "seed=0,epochs=4,lr=0.03", "seed=0,epochs=4,lr=0.1"]


def _record(pruner=True):
    """A search of 4 lrs at a cap of 4 epochs: 0.001 and 0.01 trained out (0.01 stopped by patience at 3), 0.03
    pruned at epoch 1 (2.0 s), 0.1 pruned at epoch 2 (3.0 s)."""
    trained = [
        {"run": RUNS[0], "epochs": 4, "pruned_at_epoch": None, "train_seconds": 8.0},
        {"run": RUNS[1], "epochs": 3, "pruned_at_epoch": None, "train_seconds": 6.0},
        {"run": RUNS[2], "epochs": 1, "pruned_at_epoch": 1, "train_seconds": 2.0},
        {"run": RUNS[3], "epochs": 2, "pruned_at_epoch": 2, "train_seconds": 3.0},
    ]
    if not pruner:
        trained = [t | {"pruned_at_epoch": None, "epochs": 4} for t in trained]
    lrs = [0.001, 0.01, 0.03, 0.1]
    return {
        "keys": ["train.lr"],
        "grid": {"train.lr": lrs},
        "val_acc": [{"values": {"train.lr": v}, "mean": 50.0, "per_seed": [50.0]} for v in lrs],
        "chosen": {"train.lr": 0.01},
        "budget": {"epochs": 4, "seeds": [0]},
        "rule": "best mean validation top-1",
        "runs": "tune/method=head",
        "pruner": {"name": "halving", "min_epochs": 1, "reduction": 2} if pruner else None,
        "trained": trained,
        "spent": {"epochs": sum(t["epochs"] for t in trained), "train_seconds": 19.0},
    }


def test_search_cost_bounds_the_full_grid_by_the_pruned_runs_remaining_epochs():
    cost = search_cost(_record())
    assert cost.pruner == "halving (min epochs 1, reduction 2)" and cost.runs == 4 and cost.cap == 4
    assert (cost.spent_epochs, cost.spent_seconds) == (10, 19.0)
    assert cost.full_epochs_max == 10 + (4 - 1) + (4 - 2)  # each pruned run at most to the cap
    assert cost.full_seconds_est == pytest.approx(19.0 + 3 * 2.0 + 2 * 1.5)  # at its own seconds per epoch
    assert cost.pruned == (("lr=0.03", 1), ("lr=0.1", 2)) and not cost.exact  # named by what differs
    assert cost.chosen == {"train.lr": 0.01}
    assert search_cost(_record(pruner=False)) is None  # the lr table alone describes a full grid
    assert search_cost(None) is None
    no_seconds = _record()
    no_seconds["trained"][3]["train_seconds"] = None
    assert math.isnan(search_cost(no_seconds).spent_seconds)


def _runs(root, record):
    for seed in (0, 1):
        for method, acc in (("head", 60.0), ("full", 70.0)):
            d = write_run(root, "fashion-mnist", method, seed, acc + seed)
            if method == "head":
                summary = json.loads((d / "summary.json").read_text())
                (d / "summary.json").write_text(json.dumps(summary | {"tuning": record}))


def test_the_report_shows_a_pruned_search_in_table_md_and_report_html(tmp_path):
    _runs(tmp_path / "runs", _record())
    build_report(tmp_path / "runs", tmp_path / "report")
    md = (tmp_path / "report" / "table.md").read_text()
    section = md.split("### Pruned tuning searches")[1]
    row = next(line for line in section.splitlines() if line.startswith("| fashion-mnist"))
    assert row == (
        "| fashion-mnist | vit_s | head | halving (min epochs 1, reduction 2) | 4 | 10 epochs, 19.0 s "
        "| <= 15 epochs, ~28.0 s (est.) | lr=0.03 @1, lr=0.1 @2 | lr 0.01 |"
    )
    assert sum(line.startswith("| fashion-mnist") for line in section.splitlines()) == 1  # one row per cell
    assert SEARCH_NOTE in section and "at most (cap - pruned epoch) each" in SEARCH_NOTE
    html = (tmp_path / "report" / "report.html").read_text()
    assert "<h3>Pruned tuning searches</h3>" in html and "<td>lr=0.03 @1, lr=0.1 @2</td>" in html


def test_a_search_without_a_pruner_reads_as_before(tmp_path):
    _runs(tmp_path / "runs", _record(pruner=False))
    build_report(tmp_path / "runs", tmp_path / "report")
    md = (tmp_path / "report" / "table.md").read_text()
    assert "Pruned tuning searches" not in md and "validation: lr 0.001,0.01,0.03,0.1 -> 0.01 (4 epochs" in md
    assert "Pruned tuning searches" not in (tmp_path / "report" / "report.html").read_text()
