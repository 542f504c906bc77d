"""Learning-rate selection on validation: the pure rule, the tune block, the tuning runs, what gets recorded."""

import csv
import json
import math
import shutil
from pathlib import Path

import pytest
import yaml

from adaptertune.cli import main
from adaptertune.config import RunConfig
from adaptertune.errors import ConfigError, DataError, TuningError
from adaptertune.methods import METHODS
from adaptertune.reports import build_report
from adaptertune.runs import RunStatus, RunSummary, run
from adaptertune.sweeps import InProcessExecutor, SweepSpec, expand_grid, plan_sweep, run_sweep
from adaptertune.sweeps.tuning_runs import choose, plan_tuning
from adaptertune.sweeps.tuning_spec import check_block, combinations, parse_budget, resolve_grid, select
from helpers import TINY_VIT, make_image_folder

BASE = {
    "backbone": TINY_VIT,
    "data": {"name": "imagefolder", "root": "x", "val_fraction": 0.25},
    "train": {"epochs": 3},
}


# ---------------------------------------------------------------- the rule (pure)
def test_select_picks_the_highest_validation_score():
    assert select({(1e-4,): 70.0, (1e-3,): 81.25, (1e-2,): 40.0}) == (1e-3,)


def test_select_breaks_exact_ties_towards_the_smaller_value_lr_first():
    assert select({(3e-3,): 80.0, (1e-3,): 80.0, (3e-4,): 75.0}) == (1e-3,)
    # (lr, wd) combinations: the smaller lr wins a tie whatever the weight decay, then the smaller decay
    assert select({(1e-3, 0.0): 90.0, (3e-4, 0.1): 90.0, (3e-4, 0.05): 90.0}) == (3e-4, 0.05)
    # insertion order does not matter
    a = {(1e-3,): 50.0, (1e-4,): 50.0}
    assert select(a) == select(dict(reversed(a.items()))) == (1e-4,)


@pytest.mark.parametrize("scores", [{}, {(1e-3,): math.nan}, {(1e-3,): 50.0, (1e-2,): None}])
def test_select_refuses_missing_or_non_finite_scores(scores):
    with pytest.raises(ValueError):
        select(scores)


def test_grid_resolution_and_combinations():
    block = check_block({"train.weight_decay": [0.05, 0], "train.lr": "auto"})
    grid = resolve_grid(block, (3e-3, 1e-3))
    assert list(grid) == ["train.lr", "train.weight_decay"] and grid["train.lr"] == [1e-3, 3e-3]
    assert combinations(grid) == [
        {"train.lr": 1e-3, "train.weight_decay": 0.0},
        {"train.lr": 1e-3, "train.weight_decay": 0.05},
        {"train.lr": 3e-3, "train.weight_decay": 0.0},
        {"train.lr": 3e-3, "train.weight_decay": 0.05},
    ]
    assert check_block({"train.lr": ["1e-3"]}) == {"train.lr": [1e-3]}  # YAML 1.1 reads 1e-3 as a string
    assert check_block(None) == {} and check_block({}) == {}


@pytest.mark.parametrize(
    "block, match",
    [
        ({"train.epochs": [1, 2]}, "cannot tune 'train.epochs'; tunable keys: train.lr, train.weight_decay"),
        ({"train.lr": []}, "non-empty list"),
        ({"train.lr": [1e-3, 0]}, "finite and > 0"),
        ({"train.weight_decay": [-0.1]}, "finite and >= 0"),
        ({"train.lr": [1e-3, 1e-3]}, "repeats a value"),
        ({"train.lr": ["fast"]}, "list of numbers"),
        ({"train.weight_decay": "default"}, "has no method default grid"),
        ([1e-3], "must map"),
    ],
)
def test_bad_tune_blocks_are_rejected(block, match):
    with pytest.raises(ConfigError, match=match):
        check_block(block)


@pytest.mark.parametrize(
    "budget, match",
    [({"epochs": 0}, "epochs"), ({"seeds": []}, "seeds"), ({"seeds": [0, 0]}, "seeds"), ({"steps": 3}, "takes")],
)
def test_bad_budgets_are_rejected(budget, match):
    with pytest.raises(ConfigError, match=match):
        parse_budget(budget)


@pytest.mark.parametrize("name", METHODS.names())
def test_every_method_owns_a_sorted_positive_lr_grid(name):
    grid = METHODS.get(name).lr_grid
    assert len(grid) >= 2 and list(grid) == sorted(grid) and all(v > 0 for v in grid)


def test_full_fine_tuning_searches_far_lower_than_adapters_and_head():
    full, adapter, head = (METHODS.get(n).lr_grid for n in ("full", "adapter", "head"))
    assert max(full) < min(adapter) and max(adapter) <= max(head) and min(head) > min(adapter)
    assert METHODS.get("lora").lr_grid == adapter == METHODS.get("parallel").lr_grid


# ---------------------------------------------------------------- the spec and the plan
def test_spec_tune_applies_to_every_point_unless_an_entry_overrides_or_disables_it(tmp_path):
    s = SweepSpec(
        name="s",
        base=BASE,
        tune={"train.lr": "default"},
        grid={
            "train.seed": [0, 1],
            "method": [
                {"method": "full", "tune": {"train.lr": [1e-5, 1e-4]}},
                {"method": "adapter", "adapter.rank": 4},
                {"method": "head", "tune": {}},
            ],
        },
    )
    points = expand_grid(s)
    assert [p.name for p in points[:3]] == ["seed=0,method=full", "seed=0,method=adapter,rank=4", "seed=0,method=head"]
    assert all("tune" not in p.values and "tune" not in p.config for p in points)
    groups = plan_tuning(points, None, tmp_path)
    full, adapter = groups["seed=0,method=full"], groups["seed=1,method=adapter,rank=4"]
    assert groups["seed=1,method=full"] is full and "seed=0,method=head" not in groups  # seeds share one search
    assert full.grid == {"train.lr": [1e-5, 1e-4]} and adapter.grid == {
        "train.lr": list(METHODS.get("adapter").lr_grid)
    }
    assert (full.epochs, full.seeds) == (3, (0,))  # default budget: own epochs, first seed
    assert [r.point.name for r in full.runs] == [
        "tune/method=full/seed=0,epochs=3,lr=1e-05",
        "tune/method=full/seed=0,epochs=3,lr=0.0001",
    ]
    run0 = full.runs[0]
    assert run0.run_dir == tmp_path / "tune" / "method=full" / "seed=0,epochs=3,lr=1e-05"
    assert run0.point.config["train"] == {"epochs": 3, "seed": 0, "lr": 1e-5}


def test_budget_sets_the_tuning_runs_epochs_and_seeds(tmp_path):
    budget = {"epochs": 1, "seeds": [3, 4]}
    s = SweepSpec(name="s", base=BASE, tune={"train.lr": [1e-3]}, tune_budget=budget, grid={"method": ["head"]})
    group = plan_tuning(expand_grid(s), s.tune_budget, tmp_path)["method=head"]
    assert (group.epochs, group.seeds) == (1, (3, 4))
    assert [r.point.name for r in group.runs] == [
        "tune/method=head/seed=3,epochs=1,lr=0.001",
        "tune/method=head/seed=4,epochs=1,lr=0.001",
    ]


def test_a_key_both_tuned_and_in_the_grid_is_an_error():
    s = SweepSpec(name="s", base=BASE, tune={"train.lr": [1e-3]}, grid={"train.lr": [1e-2]})
    with pytest.raises(ConfigError, match="`train.lr` is both tuned and a grid value"):
        expand_grid(s)


def test_bad_tune_block_in_a_grid_entry_is_rejected_with_the_spec():
    with pytest.raises(ConfigError, match="cannot tune 'train.epochs'"):
        SweepSpec(name="s", base=BASE, grid={"method": [{"method": "head", "tune": {"train.epochs": [1]}}]})


def test_tuning_without_a_validation_split_is_a_one_line_error(tmp_path):
    base = {**BASE, "data": {"name": "imagefolder", "root": "x", "val_fraction": 0.0}}
    s = SweepSpec(name="s", base=base, tune={"train.lr": "default"}, grid={"method": ["head"]})
    with pytest.raises(ConfigError) as e:
        plan_sweep(s, tmp_path)
    msg = str(e.value)
    assert "\n" not in msg and "'method=head'" in msg and "data.val_fraction 0, no data.val_subset" in msg
    s.base["data"]["val_subset"] = 8  # an explicit validation size is enough
    assert plan_sweep(s, tmp_path)[0].tuning


def test_dry_run_lists_the_tuning_runs_and_creates_nothing(tmp_path, capsys):
    spec_file = tmp_path / "s.yaml"
    spec_file.write_text(
        yaml.safe_dump(
            {
                "base": BASE,
                "tune": {"train.lr": [1e-3, 1e-2]},
                "tune_budget": {"epochs": 1},
                "grid": {"method": ["head"]},
            }
        )
    )
    assert main(["sweep", str(spec_file), "--results-dir", str(tmp_path / "r"), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "3 runs" in out and "tune/method=head/seed=0,epochs=1,lr=0.001" in out and "lr=0.01" in out
    assert "train.lr selected on validation in tune/method=head" in out and not (tmp_path / "r").exists()


# ---------------------------------------------------------------- selection reads validation only
def _fake_tuning_run(run_dir: Path, lr: float, val: float, test: float | None) -> None:
    run_dir.mkdir(parents=True)
    (run_dir / "config.yaml").write_text(yaml.safe_dump({"method": "head", "train": {"lr": lr}}))
    s = RunSummary(RunStatus.SUCCESS, "head", "test_vit", "imagefolder", seed=0, protocol={"epochs": 1})
    s.best_val_acc, s.test_acc, s.tuning_run = val, test, True
    (run_dir / "summary.json").write_text(json.dumps(s.to_dict()))


def test_choose_uses_validation_accuracy_and_never_test(tmp_path):
    s = SweepSpec(name="s", base=BASE, tune={"train.lr": [1e-3, 1e-2, 1e-1]}, grid={"method": ["head"]})
    group = plan_tuning(expand_grid(s), None, tmp_path)["method=head"]
    # a test accuracy planted in the summaries would pick lr 0.1; validation picks 0.01
    for r, val, test in zip(group.runs, (60.0, 75.0, 50.0), (10.0, 20.0, 99.0)):
        _fake_tuning_run(r.run_dir, r.combo["train.lr"], val, test)
    chosen, record = choose(group)
    assert chosen == {"train.lr": 1e-2}
    assert [v["mean"] for v in record["val_acc"]] == [60.0, 75.0, 50.0]
    assert record["budget"] == {"epochs": 3, "seeds": [0]} and record["grid"] == {"train.lr": [1e-3, 1e-2, 1e-1]}
    shutil.rmtree(group.runs[2].run_dir)
    with pytest.raises(TuningError, match="lr=0.1' is pending"):
        choose(group)


def test_a_tuning_run_never_reads_a_test_image(tmp_path):
    root = make_image_folder(tmp_path / "data", n_classes=2, n_train=8, n_test=2)
    for png in (root / "test").rglob("*.png"):
        png.write_bytes(b"not a png")  # with data.strict, reading any test image is an error
    cfg = {
        "backbone": TINY_VIT,
        "data": {"name": "imagefolder", "root": str(root), "val_fraction": 0.25, "num_workers": 0, "strict": True},
        "train": {"epochs": 1, "batch_size": 8, "device": "cpu"},
        "method": "head",
    }
    summary = run(RunConfig.from_dict({**cfg, "out_dir": str(tmp_path / "tune-run")}), tuning=True)
    assert summary.tuning_run and summary.test_acc is None and summary.best_val_acc is not None
    saved = json.loads((tmp_path / "tune-run" / "summary.json").read_text())
    assert saved["tuning_run"] is True and saved["test_acc"] is None and saved["status"] == "success"
    with pytest.raises(DataError, match="Corrupt image"):  # the same run, tested, does read them
        run(RunConfig.from_dict({**cfg, "out_dir": str(tmp_path / "final-run")}))


# ---------------------------------------------------------------- end to end
@pytest.mark.slow
def test_sweep_tunes_runs_at_the_chosen_lr_records_it_and_reuses_tuning_runs(tmp_path, image_folder):
    base = {
        "backbone": TINY_VIT,
        "data": {"name": "imagefolder", "root": str(image_folder), "val_fraction": 0.25, "num_workers": 0},
        "train": {"epochs": 1, "batch_size": 16, "device": "cpu", "warmup_epochs": 0},
    }
    s = SweepSpec(
        name="t",
        base=base,
        grid={"method": [{"method": "head", "tune": {"train.lr": [1e-4, 3e-2]}}, "linear-probe-cached"]},
    )
    out = tmp_path / "out"
    result = run_sweep(s, out, InProcessExecutor())
    assert [r.status for r in result.results] == ["success"] * 4, [r.error for r in result.results]
    tune_dirs = sorted(p.name for p in (out / "tune" / "method=head").iterdir() if not p.name.startswith("."))
    assert tune_dirs == ["seed=0,epochs=1,lr=0.0001", "seed=0,epochs=1,lr=0.03"]
    vals = {}
    for d in tune_dirs:
        summary = json.loads((out / "tune" / "method=head" / d / "summary.json").read_text())
        assert summary["tuning_run"] and summary["test_acc"] is None  # no test metrics before selection
        vals[float(d.rsplit("lr=", 1)[1])] = summary["best_val_acc"]
    expected = select({(lr,): v for lr, v in vals.items()})[0]

    final = json.loads((out / "method=head" / "summary.json").read_text())
    config = yaml.safe_load((out / "method=head" / "config.yaml").read_text())
    assert final["tuning"]["chosen"] == {"train.lr": expected} and config["train"]["lr"] == expected
    assert [v["mean"] for v in final["tuning"]["val_acc"]] == [vals[1e-4], vals[3e-2]]
    assert json.loads((out / "method=linear-probe-cached" / "summary.json").read_text())["tuning"] is None

    report = build_report(out, out / "report")
    assert {c.variant for c in report.cells} == {"head", "linear-probe-cached"}  # the tuning runs are not report cells
    rows = {r["run"]: r for r in csv.DictReader((out / "report" / "results.csv").open())}
    assert set(rows) == {"method=head", "method=linear-probe-cached"}
    assert (
        float(rows["method=head"]["lr"]) == expected and float(rows["method=linear-probe-cached"]["lr"]) == 1e-3
    )  # its default
    assert rows["method=head"]["lr_selection"].startswith("validation: lr 0.0001,0.03 -> ")
    assert rows["method=linear-probe-cached"]["lr_selection"] == "fixed"
    md = (out / "report" / "table.md").read_text()
    assert "## Learning rates" in md and f"-> {expected:g} (1 epochs, seeds 0)" in md and "never on test" in md
    assert "Learning rate per variant" in (out / "report" / "report.html").read_text()

    again = run_sweep(s, out, InProcessExecutor())  # everything finished: nothing reruns, tuning is re-read
    assert again.results == [] and json.loads((out / "method=head" / "summary.json").read_text()) == final
