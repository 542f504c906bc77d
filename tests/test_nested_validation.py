"""benchmarks/nested_validation.py, advisor_scores.py and capacity_table.py: their scoring on known answers."""

import csv
import importlib
import json
import math
import sys
from pathlib import Path

import pytest
import yaml

_BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture(scope="module")
def mods():
    sys.path.insert(0, str(_BENCH))
    try:
        yield tuple(importlib.import_module(m) for m in ("nested_validation", "advisor_scores", "capacity_table"))
    finally:
        sys.path.remove(str(_BENCH))


def test_t_interval_known_answer(mods):
    nv = mods[0]
    m, lo, hi = nv.t_interval([1.0, 2.0, 3.0])
    h = 4.302652729911275 * 1.0 / math.sqrt(3)  # t(0.975, 2) * sd / sqrt(n)
    assert m == 2.0 and lo == pytest.approx(2 - h) and hi == pytest.approx(2 + h)
    assert math.isnan(nv.t_interval([5.0])[1])


def test_nested_spec_keeps_the_sweeps_protocol(mods):
    nv = mods[0]
    spec = nv.nested_spec("mnist-5k", nv.FULL)
    assert spec["base"]["adapter"] == {"rank": 64, "nested": True, "nested_ranks": [1, 2, 4, 8, 16, 32, 64]}
    assert spec["grid"] == {"train.seed": [0, 1, 2]}
    data = spec["base"]["data"]
    assert (data["subset"], data["test_subset"], data["val_fraction"], data["val_subset"]) == (512, 1000, 0.0, 256)
    assert "val_subset" not in nv.nested_spec("lfw", nv.FULL)["base"]["data"]  # no images left for validation


def _write(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


def test_compare_pairs_by_seed_and_pools_over_tasks(mods, tmp_path):
    nv = mods[0]
    p = {"ranks": [1, 4], "seeds": [0, 1, 2]}  # test accuracies below: a seed effect + a little noise
    for task, shift in (("a", 1.0), ("b", 3.0)):
        sep = [
            {
                "rank": r,
                "seed": s,
                "test_acc": 70 + 5 * r + s + 0.3 * ((r + s) % 2),
                "status": "success",
                "train_seconds": 10,
            }
            for r in p["ranks"]
            for s in p["seeds"]
        ]
        _write(tmp_path / "sep" / task / "runs" / "report" / "results.csv", sep)
        for s in p["seeds"]:
            run = tmp_path / "out" / task / "nested" / f"seed={s}"
            # nested = separate - shift at r=4 (+ a seed-dependent wobble), equal at r=1
            curve = [
                {
                    "rank": r,
                    "seed": s,
                    "test_acc": 70 + 5 * r + s + 0.3 * ((r + s) % 2) - (shift + 0.5 * s) * (r == 4),
                    "val_acc": 50,
                    "status": "success",
                }
                for r in p["ranks"]
            ]
            _write(run / "rank_curve.csv", curve)
            (run / "summary.json").write_text(json.dumps({"train_seconds": 15}))
    text = nv.compare(["a", "b"], p, tmp_path / "out", tmp_path / "sep", {})
    assert "| a | +0.00 [" in text and "-1.50 [" in text  # a: mean of -(1 + 0.5 s) over s = 0, 1, 2
    assert "**-2.50**" in text  # pooled at r=4: mean of -1.5 and -3.5
    assert "| a | 60 s | 45 s | 1.3x |" in text  # 6 separate runs of 10 s vs 3 nested runs of 15 s
    rows = list(csv.DictReader(open(tmp_path / "out" / "nested-vs-separate.csv")))
    assert [float(r["mean_diff"]) for r in rows] == [0.0, -1.5, 0.0, -3.5]


def test_advice_goes_to_the_nearest_swept_rank(mods):
    av = mods[1]
    assert [av.on_grid(r) for r in (None, 0, 1, 3, 5, 6, 11, 12, 45, 46, 88, 300)] == [
        1,
        1,
        1,
        4,
        4,
        8,
        8,
        16,
        32,
        64,
        64,
        64,
    ]  # 3 = 2^1.58 -> 4; 45 < 2^5.5 = 45.25 -> 32


def test_scores_known_answer(mods):
    av = mods[1]
    means = {1: 70.0, 2: 72.0, 4: 75.0, 8: 76.0, 16: 76.5, 32: 76.0, 64: 76.2}
    params = {r: 1000 * r for r in means}
    picks = {"t": {"x": 4, "y": 16, "z": 64}}
    loss, lpar = av.scores({"t": (means, params, [])}, picks)
    assert loss == {"x": [1.5], "y": [0.0], "z": [pytest.approx(0.3)]}
    assert lpar == {"x": [-4.0], "y": [-2.0], "z": [0.0]}


def test_nested_choice_reads_validation_within_delta(mods, tmp_path):
    av = mods[1]
    val = {0: 20.0, 1: 70.0, 2: 71.0, 4: 74.5, 8: 75.0, 16: 74.0, 32: 75.3, 64: 75.2}
    for s in range(3):
        run = tmp_path / "t" / "nested" / f"seed={s}"
        _write(
            run / "rank_curve.csv",
            [
                {"rank": r, "seed": s, "test_acc": 0.0, "val_acc": v + (s % 2) * 0.3 * (r % 3), "status": "success"}
                for r, v in val.items()
            ],
        )
        (run / "summary.json").write_text("{}")
    one, three, split = av.nested_choice("t", tmp_path)
    assert one == 4 and split == "val"  # 74.5 >= 75.3 - 1; 71.0 is not (rank 0 is never advised)
    assert three in av.GRID


def test_capacity_table_reads_runs(mods, tmp_path):
    ct = mods[2]
    tuning = {"runs": "tune/x", "grid": {"train.lr": [1e-4, 1e-3, 1e-2]}, "spent": {"train_seconds": 30.0}}
    for r, lr in ((0, 1e-2), (4, 1e-3)):
        for s in range(2):
            d = tmp_path / "sep" / f"seed={s},r={r}"
            d.mkdir(parents=True)
            summary = {
                "status": "success",
                "method": "linear-probe-cached" if r == 0 else "adapter",
                "rank": r or None,
                "seed": s,
                "test_acc": 60 + r + s,
                "stopped_epoch": None if s else 7,
                "train_seconds": 10.0,
                "tuning": dict(tuning, runs=f"tune/{r}"),
                "tested_from": "tune/..." if s == 0 else None,
            }
            (d / "summary.json").write_text(json.dumps(summary))
            (d / "config.yaml").write_text(yaml.safe_dump({"train": {"lr": lr, "epochs": 16}}))
    for lr in (1e-4, 1e-3):  # two tuning runs of one search, one of them pruned
        d = tmp_path / "sep" / "tune" / "r=4" / f"lr={lr}"
        d.mkdir(parents=True)
        (d / "summary.json").write_text(json.dumps({"status": "success", "train_seconds": 30.0}))
        (d / "config.yaml").write_text(yaml.safe_dump({"train": {"lr": lr, "epochs": 16}}))
    cells, final_s, tune_s = ct.separate(tmp_path / "sep")
    assert cells[0]["lr"] == "0.01*" and cells[4]["lr"] == "0.001"  # * : at an end of the searched values
    assert cells[4]["acc"] == {0: 64.0, 1: 65.0} and cells[4]["epochs"] == [7, 16] and cells[4]["capped"] == 1
    assert (final_s, tune_s) == (20.0, 60.0)  # seed-0 runs reuse their tuning run: counted once, in the search
