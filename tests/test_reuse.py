"""A tuned point's seed-0 final run is the tuning run at the chosen values, tested after the choice."""

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from adaptertune.errors import ConfigError, OutputError
from adaptertune.reports import build_report
from adaptertune.runs.adapter_file import read_adapter_file
from adaptertune.runs.predictions import read_predictions
from adaptertune.sweeps import InProcessExecutor, SweepSpec, expand_grid, run_sweep
from adaptertune.sweeps.reuse import reuse_source
from adaptertune.sweeps.tuning_runs import apply_choice, choose, plan_tuning
from adaptertune.sweeps.tuning_spec import parse_budget
from helpers import TIMING, TINY_VIT

LRS = [1e-3, 3e-2]
EPOCHS = 2
GROUP = "method=adapter,rank=4,dropout=0.1"
TIMED = {"train_seconds", "train_images_per_second", "peak_memory_mb"}  # differ run to run


def _spec(root: Path, seeds: tuple[int, ...] = (0, 1), **budget) -> SweepSpec:
    base = {
        "backbone": TINY_VIT,
        "data": {"name": "imagefolder", "root": str(root), "val_fraction": 0.25, "num_workers": 0},
        "train": {"epochs": EPOCHS, "batch_size": 16, "device": "cpu", "warmup_epochs": 0},
    }
    # dropout: the final run draws from the global RNG as its tuning run did
    method = {"method": "adapter", "adapter.rank": 4, "adapter.dropout": 0.1, "tune": {"train.lr": LRS}}
    grid = {"train.seed": list(seeds), "method": [method]}
    return SweepSpec(name="r", base=base, grid=grid, tune_budget=budget or None)


def _summary(run_dir: Path) -> dict:
    return json.loads((run_dir / "summary.json").read_text())


def _metrics(run_dir: Path) -> list[dict]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if k not in TIMING} for line in lines]


@pytest.fixture(scope="module")
def reused(image_folder, tmp_path_factory):
    """A sweep with reuse on (the default): seed 0 tested from its tuning run, seed 1 trained."""
    out = tmp_path_factory.mktemp("reused")
    result = run_sweep(_spec(image_folder), out, InProcessExecutor())
    assert [r.status for r in result.results] == ["success"] * 4, [r.error for r in result.results]
    return out


def _final(out: Path, seed: int) -> Path:
    return out / f"seed={seed},{GROUP}"


def test_the_seed_0_final_run_is_its_tuning_run_tested_and_seed_1_trains(reused):
    s0, s1 = _summary(_final(reused, 0)), _summary(_final(reused, 1))
    lr = s0["tuning"]["chosen"]["train.lr"]
    source = f"tune/{GROUP}/seed=0,epochs={EPOCHS},lr={lr:g}"
    assert s0["tested_from"] == source and s1["tested_from"] is None
    assert s0["tuning"]["reuse"] is True
    assert s0["tuning"]["tested_from"] == s1["tuning"]["tested_from"] == {f"seed=0,{GROUP}": source}
    tuned = _summary(reused / source)
    assert tuned["tuning_run"] and tuned["test_acc"] is None  # the tuning run itself is left untested
    assert not s0["tuning_run"] and s0["test_acc"] is not None and s0["predictions"] == "predictions.npz"
    for key in ("best_val_acc", "best_epoch", "stopped_epoch", "train_seconds", "trainable_params"):
        assert s0[key] == tuned[key]
    assert _metrics(_final(reused, 0)) == _metrics(reused / source)
    config, ran = (yaml.safe_load((d / "config.yaml").read_text()) for d in (_final(reused, 0), reused / source))
    assert config == {**ran, "out_dir": str(_final(reused, 0))}
    point = json.loads((_final(reused, 0) / "point.json").read_text())
    assert point["name"] == f"seed=0,{GROUP}"
    assert not any(p.name.startswith(".") and p.name.endswith(".overwrite") for p in reused.iterdir())


def test_reuse_off_trains_the_final_run_and_the_reused_one_equals_it_bitwise(reused, image_folder, tmp_path):
    shutil.copytree(reused / "tune", tmp_path / "tune")  # the same search, trained already
    result = run_sweep(_spec(image_folder, (0,), reuse=False), tmp_path, InProcessExecutor())
    assert [r.status for r in result.results] == ["success"], [r.error for r in result.results]
    final, fresh = _final(reused, 0), _final(tmp_path, 0)
    a, b = _summary(final), _summary(fresh)
    assert b["tested_from"] is None and b["tuning"]["reuse"] is False and b["tuning"]["tested_from"] == {}
    assert (a["test_acc"], a["test_top5"], a["best_val_acc"]) == (b["test_acc"], b["test_top5"], b["best_val_acc"])
    last_selected = b["best_epoch"] == (b["stopped_epoch"] or EPOCHS)
    assert a["test_acc_last"] == (b["test_acc_last"] if last_selected else None)  # the last model is not kept
    same = {"test_acc_last", "tested_from", "tuning", *TIMED}
    assert {k: v for k, v in a.items() if k not in same} == {k: v for k, v in b.items() if k not in same}
    pa, pb = read_predictions(final), read_predictions(fresh)
    for name in ("index", "label", "pred", "prob"):
        assert np.array_equal(getattr(pa, name), getattr(pb, name)), name
    assert pa.prob.dtype == np.float16 and pa.prob.tobytes() == pb.prob.tobytes()
    (ta, ma), (tb, mb) = (read_adapter_file(d / "adaptertune_weights.safetensors") for d in (final, fresh))
    assert ta.keys() == tb.keys() and all(ta[k].equal(tb[k]) for k in ta) and ma == mb
    assert _metrics(final) == _metrics(fresh)
    config, fresh_config = (yaml.safe_load((d / "config.yaml").read_text()) for d in (final, fresh))
    assert config == {**fresh_config, "out_dir": str(final)}


def test_a_final_run_that_differs_from_its_tuning_run_is_not_reused(reused, image_folder):
    spec = _spec(image_folder)
    points = {p.name: p for p in expand_grid(spec)}
    group = plan_tuning(list(points.values()), spec.tune_budget, reused)[f"seed=0,{GROUP}"]
    values, _ = choose(group)
    config = apply_choice(points[f"seed=0,{GROUP}"].config, values)
    where = Path("somewhere")
    assert reuse_source(group, values, config, where).point.name.startswith(f"tune/{GROUP}/seed=0,")
    changes = (("train.epochs", EPOCHS + 1), ("train.early_stop", 1), ("data.subset", 20), ("adapter.rank", 8))
    for key, value in changes:
        assert reuse_source(group, values, apply_choice(config, {key: value}), where) is None, key
    other = {"train.lr": next(lr for lr in LRS if lr != values["train.lr"])}
    assert reuse_source(group, other, apply_choice(config, other), where) is not None  # that run, at its lr
    assert reuse_source(group, values, apply_choice(config, {"train.seed": 1}), where) is None  # no budget seed
    budget_off = plan_tuning(list(points.values()), {"reuse": False}, reused)[f"seed=0,{GROUP}"]
    assert reuse_source(budget_off, values, config, where) is None
    # a budget shorter than the final run's: every final run trains
    short = plan_tuning(list(points.values()), {"epochs": 1}, reused)[f"seed=0,{GROUP}"]
    assert all(reuse_source(short, r.combo, config, where) is None for r in short.runs)


def test_a_pruned_tuning_run_never_supplies_a_final_run(reused, image_folder, tmp_path):
    shutil.copytree(reused / "tune", tmp_path / "tune")
    spec = _spec(image_folder)
    points = {p.name: p for p in expand_grid(spec)}
    group = plan_tuning(list(points.values()), None, tmp_path)[f"seed=0,{GROUP}"]
    values, _ = choose(group)
    config = apply_choice(points[f"seed=0,{GROUP}"].config, values)
    source = reuse_source(group, values, config, tmp_path / "x")
    summary = _summary(source.run_dir)
    (source.run_dir / "summary.json").write_text(json.dumps({**summary, "pruned_at_epoch": 1}))
    assert reuse_source(group, values, config, tmp_path / "x") is None


def test_a_second_sweep_skips_the_reused_run_and_the_report_builds(reused, image_folder):
    before = {seed: _summary(_final(reused, seed)) for seed in (0, 1)}
    again = run_sweep(_spec(image_folder), reused, InProcessExecutor())
    assert again.results == [] and {seed: _summary(_final(reused, seed)) for seed in (0, 1)} == before
    report = build_report(reused, reused / "report")
    assert len(report.cells) == 1 and len(report.cells[0].runs) == 2  # the tuning runs are no cells


def test_a_failed_reuse_leaves_a_failed_summary_and_the_next_sweep_finishes_it(
    reused, image_folder, tmp_path, monkeypatch
):
    shutil.copytree(reused / "tune", tmp_path / "tune")
    import adaptertune.runs.predictions as predictions

    def full_disk(*args, **kwargs):
        raise OutputError("Cannot write 'predictions.npz': No space left on device; nothing was written.")

    monkeypatch.setattr(predictions, "write_predictions", full_disk)
    seed0 = _final(tmp_path, 0)
    result = run_sweep(_spec(image_folder, (0,), reuse=True), tmp_path, InProcessExecutor())
    failed = {r.name: r for r in result.results if r.status != "success"}
    assert list(failed) == [f"seed=0,{GROUP}"] and "No space left" in failed[f"seed=0,{GROUP}"].error
    assert sorted(p.name for p in seed0.iterdir()) == ["summary.json"]  # no half folder
    s = _summary(seed0)
    assert s["status"] == "failed" and "OutputError" in s["error"]
    assert not (tmp_path / f".{seed0.name}.overwrite").exists()
    monkeypatch.undo()
    result = run_sweep(_spec(image_folder, (0,)), tmp_path, InProcessExecutor())
    assert [r.status for r in result.results] == ["success"], [r.error for r in result.results]
    assert _summary(seed0)["tested_from"] == _summary(_final(reused, 0))["tested_from"]
    assert read_predictions(seed0).prob.tobytes() == read_predictions(_final(reused, 0)).prob.tobytes()


def test_the_reuse_key_of_the_budget():
    assert parse_budget(None).reuse is True and parse_budget({"reuse": False}).reuse is False
    with pytest.raises(ConfigError, match="`tune_budget.reuse` must be true or false, got 'yes'"):
        parse_budget({"reuse": "yes"})


def test_a_test_split_that_would_change_the_batched_decision_trains_the_final_run(reused, image_folder, tmp_path):
    shutil.copytree(reused / "tune", tmp_path / "tune")
    source = tmp_path / _summary(_final(reused, 0))["tested_from"]
    config = yaml.safe_load((source / "config.yaml").read_text())
    config["data"]["batched"] = "on"  # as if its train and val splits were arrays: `auto` decided `on` for them
    (source / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    result = run_sweep(_spec(image_folder, (0,)), tmp_path, InProcessExecutor())
    assert [r.status for r in result.results] == ["success"], [r.error for r in result.results]
    s = _summary(_final(tmp_path, 0))  # the image test split goes per image: `auto` decides `off` for the final run
    assert (
        s["tested_from"] is None
        and yaml.safe_load((_final(tmp_path, 0) / "config.yaml").read_text())["data"]["batched"] == "off"
    )


def test_a_reused_nested_run_writes_the_rank_curve_a_trained_one_writes(image_folder, tmp_path):
    def spec(reuse: bool) -> SweepSpec:
        s = _spec(image_folder, (0,), reuse=reuse)
        nested = {"method": "adapter", "adapter.rank": 4, "adapter.nested": True, "tune": {"train.lr": LRS}}
        return SweepSpec(
            name="n", base=s.base, grid={"train.seed": [0], "method": [nested]}, tune_budget=s.tune_budget
        )

    curves = []
    for reuse in (True, False):
        out = tmp_path / str(reuse)
        result = run_sweep(spec(reuse), out, InProcessExecutor())
        assert [r.status for r in result.results] == ["success"] * 3, [r.error for r in result.results]
        (final,) = [p for p in out.iterdir() if p.name.startswith("seed=0,")]
        assert (_summary(final)["tested_from"] is not None) == reuse
        rows = list(csv.DictReader((final / "rank_curve.csv").open()))
        curves.append([{k: v for k, v in row.items() if k != "run"} for row in rows])
    assert [row["rank"] for row in curves[0]] == ["0", "1", "2", "4"]
    assert curves[0] == curves[1]  # every rank's validation and test accuracy, parameters and label
