"""The leaderboard, the Pareto plot and the budget section of the report (reports/leaderboard.py): on a tiny real
sweep (3 methods x 2 seeds of a shrunken test ViT, early stopping on validation) every number is checked against
the run folders; the frontier, the budget-limited flag and the reference choice on hand-made inputs."""

import csv
import json
import math

import numpy as np
import pytest

from adaptertune.config import RunConfig
from adaptertune.methods.flops import step_flops, vit_geometry
from adaptertune.reports.board import write_board
from adaptertune.reports.bootstrap import all_noise_verdict, mean_interval, paired_interval
from adaptertune.reports.builder import build_report
from adaptertune.reports.collect import Cell, RunRecord, budget_limited, budget_note
from adaptertune.reports.leaderboard import gain_interval, ms_per_step, reference_cell
from adaptertune.reports.plots import pareto_front
from adaptertune.reports.stats import paired_comparison, t_interval
from adaptertune.reports.tables import Gain
from adaptertune.resolve import resolve_run
from adaptertune.runs import RunStatus, run
from helpers import TINY_VIT, make_image_folder

SMALL_VIT = {**TINY_VIT, "args": {"patch_size": 8, "embed_dim": 32, "depth": 2, "num_heads": 2}}  # fast to train
# head at lr 1e-12 never improves: early stopping (patience 1) ends it after epoch 2; adapter has no early stop:
# it trains to the cap (budget-limited); lora stops early or not, as its validation goes
METHODS = {"head": {"lr": 1e-12, "early_stop": 1}, "adapter": {"lr": 1e-3}, "lora": {"lr": 1e-3, "early_stop": 1}}
SEEDS = (0, 1)
EPOCHS, BATCH = 3, 8


def _config(root, out, method, seed):
    train = {"epochs": EPOCHS, "batch_size": BATCH, "seed": seed, "device": "cpu", **METHODS[method]}
    data = {"name": "imagefolder", "root": str(root), "num_workers": 0, "val_subset": 8}
    return {"backbone": SMALL_VIT, "data": data, "method": method, "train": train, "out_dir": str(out)}


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    base = tmp_path_factory.mktemp("board")
    images = make_image_folder(base / "images", n_train=8)
    for method in METHODS:
        for seed in SEEDS:
            run(RunConfig.from_dict(_config(images, base / "runs" / f"method={method},seed={seed}", method, seed)))
    report = build_report(base / "runs", base / "report")
    return base / "runs", base / "report", report


def _runs(runs_dir, method):
    out = []
    for seed in SEEDS:
        d = runs_dir / f"method={method},seed={seed}"
        metrics = [json.loads(line) for line in (d / "metrics.jsonl").read_text().splitlines()]
        out.append((json.loads((d / "summary.json").read_text()), metrics))
    return out


def test_the_report_writes_the_section_and_its_files(sweep):
    _, out, report = sweep
    names = {p.name for p in report.files}
    new = {"leaderboard.csv", "leaderboard.md", "budget.csv", "budget_steps.png", "budget_seconds.png", "pareto.png"}
    assert new <= names
    for png in ("budget_steps.png", "budget_seconds.png", "pareto.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    md, html = (out / "table.md").read_text(), (out / "report.html").read_text()
    assert "## Leaderboard and budget curves" in md and (out / "leaderboard.md").read_text() in md
    assert "These are validation curves: the test split is evaluated only at each run's selected" in md
    assert "<h2>Leaderboard and budget curves</h2>" in html and "<td>adapter r=16</td>" in html
    assert html.count("data:image/png;base64,") == sum(p.suffix == ".png" for p in report.files)  # all embedded
    assert "<b>budget-limited</b>" in html


def test_budget_csv_is_the_metrics_of_every_run(sweep):
    runs_dir, out, _ = sweep
    rows = list(csv.DictReader((out / "budget.csv").open()))
    assert len(rows) == sum(len(m) for method in METHODS for _, m in _runs(runs_dir, method))
    for method, cell in (("head", "head"), ("adapter", "adapter r=16"), ("lora", "lora r=16")):
        for seed, (_, metrics) in zip(SEEDS, _runs(runs_dir, method)):
            mine = [r for r in rows if r["cell"] == cell and r["seed"] == str(seed)]
            assert [int(r["epoch"]) for r in mine] == [m["epoch"] for m in metrics]
            assert [int(r["step"]) for r in mine] == [m["step"] for m in metrics]
            seconds = [math.fsum(m["epoch_seconds"] for m in metrics[: i + 1]) for i in range(len(metrics))]
            assert [float(r["seconds"]) for r in mine] == pytest.approx(seconds, abs=1e-4)
            assert [float(r["val_acc"]) for r in mine] == pytest.approx([m["val_acc"] for m in metrics], abs=1e-4)


N_TEST = 16  # make_image_folder's test split


def _correct(runs_dir, method):
    """Per seed, 100 x whether each test image's top-1 is right, read from predictions.npz with numpy."""
    out = []
    for seed in SEEDS:
        with np.load(runs_dir / f"method={method},seed={seed}" / "predictions.npz") as f:
            assert f["index"].tolist() == list(range(N_TEST))
            out.append(100.0 * (f["pred"] == f["label"]))
    return out


def test_leaderboard_numbers_are_the_run_folders(sweep):
    runs_dir, out, _ = sweep
    rows = {r["variant"]: r for r in csv.DictReader((out / "leaderboard.csv").open())}
    assert set(rows) == {"head", "adapter r=16", "lora r=16"}
    accs = [float(r["test_acc"]) for r in sorted(rows.values(), key=lambda r: int(r["rank"]))]
    assert accs == sorted(accs, reverse=True)  # sorted by test accuracy
    ref = {s["seed"]: s["test_acc"] for s, _ in _runs(runs_dir, "adapter")}
    for method, cell in (("head", "head"), ("adapter", "adapter r=16"), ("lora", "lora r=16")):
        row, runs = rows[cell], _runs(runs_dir, method)
        test = [s["test_acc"] for s, _ in runs]
        assert float(row["test_acc"]) == pytest.approx(sum(test) / 2, abs=1e-4)
        lo, hi = t_interval(test)
        if math.isfinite(lo):
            assert (float(row["test_acc_low"]), float(row["test_acc_high"])) == pytest.approx((lo, hi), abs=1e-4)
        ms = [1000 * math.fsum(m["epoch_seconds"] for m in ms_) / ms_[-1]["step"] for _, ms_ in runs]
        assert float(row["ms_per_step"]) == pytest.approx(sum(ms) / 2, abs=0.01)
        assert float(row["epochs"]) == sum(len(m) for _, m in runs) / 2 and row["epoch_cap"] == str(EPOCHS)
        early = sum(s["stopped_epoch"] is not None for s, _ in runs)
        at_cap = sum(s["stopped_epoch"] is None and len(m) == EPOCHS for s, m in runs)
        assert (int(row["runs_stopped_early"]), int(row["runs_at_cap"])) == (early, at_cap)
        assert row["budget_limited"] == str(at_cap > 0)
        assert row["lr"] == f"{METHODS[method]['lr']:.3g}" and row["reference"] == "adapter r=16"
        if method == "adapter":
            assert row["gain"] == "" and row["gain_verdict"] == ""
        else:
            p = paired_comparison({s["seed"]: s["test_acc"] for s, _ in runs}, ref)
            assert float(row["gain"]) == pytest.approx(p.mean_diff, abs=1e-4)
            # every run wrote predictions: the gain's interval is the bootstrap over seeds and test images
            boot = paired_interval(_correct(runs_dir, method), _correct(runs_dir, "adapter"))
            assert (float(row["gain_low"]), float(row["gain_high"])) == pytest.approx((boot.low, boot.high), abs=1e-4)
            assert row["gain_verdict"] == all_noise_verdict(p.ci_low, p.ci_high, boot.low, boot.high)
            assert row["gain_interval"] == f"seeds (init, order) + {N_TEST} test images (bootstrap; verdict with t)"
        acc = mean_interval(_correct(runs_dir, method))  # the test accuracy's seeds + test images interval
        assert float(row["test_acc"]) == pytest.approx(acc.mean, abs=1e-4)  # every image readable: the same mean
        assert (float(row["test_acc_all_noise_low"]), float(row["test_acc_all_noise_high"])) == pytest.approx(
            (acc.low, acc.high), abs=1e-4
        )
        assert row["test_acc_all_noise_covers"] == f"seeds (init, order) + {N_TEST} test images"
    assert rows["head"]["runs_stopped_early"] == "2" and rows["head"]["budget_limited"] == "False"
    assert rows["adapter r=16"]["runs_at_cap"] == "2" and rows["adapter r=16"]["budget_limited"] == "True"
    board_md = (out / "leaderboard.md").read_text()
    assert "2/2 at cap **budget-limited**" in board_md
    assert "| [95% CI, bootstrap: seeds + test images] |" in board_md
    lo, hi = float(rows["head"]["test_acc_all_noise_low"]), float(rows["head"]["test_acc_all_noise_high"])
    assert f"[{lo:.2f}, {hi:.2f}] (seeds (init, order) + {N_TEST} test images)" in board_md


def test_leaderboard_flops_are_the_methods_formula_on_the_runs_geometry(sweep):
    runs_dir, out, _ = sweep
    rows = {r["method"]: r for r in csv.DictReader((out / "leaderboard.csv").open())}
    for method in METHODS:
        summary, _ = _runs(runs_dir, method)[0]
        rr = resolve_run(RunConfig.from_dict(_config("unused", runs_dir / "x", method, 0)))
        _, model = rr.build_model(summary["num_classes"])
        batch = min(BATCH, summary["split_sizes"]["train"])
        flops = step_flops(vit_geometry(model), method, rr.options).scaled(batch).total / 1e9
        assert float(rows[method]["gflops_per_step"]) == pytest.approx(flops, rel=1e-3)


# ---------------------------------------------------------------- hand-made inputs
def test_the_pareto_frontier_keeps_the_unbeaten_points():
    points = [(10, 50.0), (10, 60.0), (100, 55.0), (100, 70.0), (1000, 70.0), (5, 40.0), (5000, 71.0)]
    assert pareto_front(points) == [(5, 40.0), (10, 60.0), (100, 70.0), (5000, 71.0)]  # 1000 params: no gain


def _run(stopped=None, epochs=3, steps_per_epoch=4, seconds=2.0, best_val=None, variant="x", seed=0):
    history = [{"epoch": e, "step": e * steps_per_epoch, "epoch_seconds": seconds} for e in range(1, epochs + 1)]
    return RunRecord("r", RunStatus.SUCCESS, variant=variant, seed=seed, history=history, stopped_epoch=stopped,
                     best_val_acc=best_val)  # fmt: skip


def test_a_run_that_trained_to_its_cap_is_budget_limited():
    assert budget_limited(_run(epochs=5), 5)  # no early stop, all epochs: budget-limited
    assert not budget_limited(_run(stopped=3, epochs=3), 5)  # early stopping ended it
    assert not budget_limited(_run(stopped=5, epochs=5), 5)  # patience used up exactly at the cap: it plateaued
    assert not budget_limited(_run(epochs=5), None)  # no cap recorded: not claimed


def test_budget_note_names_the_cells_with_runs_at_their_cap():
    def cell(variant, *runs):
        for r in runs:
            r.setup = {"train.epochs": 5}
        return Cell("d", "b", variant, "m", None, list(runs), "s")

    plateaued = cell("head", _run(stopped=3, epochs=3), _run(stopped=5, epochs=5))
    capped = cell("adapter r=16", _run(epochs=5), _run(stopped=4, epochs=4))
    assert budget_note(plateaued) == ""  # early stopping ended every run: no longer budget would change it
    assert budget_note(capped, plateaued) == "budget-limited: 1/2 runs of adapter r=16 at the 5-epoch cap"


def test_ms_per_step_is_summed_epoch_seconds_over_steps():
    assert ms_per_step(_run(epochs=3, steps_per_epoch=4, seconds=2.0)) == pytest.approx(500.0)
    bare = _run()
    del bare.history[0]["epoch_seconds"]
    assert ms_per_step(bare) is None


def _c(variant, method, *vals, params=100):
    runs = [_run(best_val=v, variant=variant, seed=i) for i, v in enumerate(vals)]
    for r in runs:
        r.trainable_params = params
    return Cell("d", "b", variant, method, None, runs, "x")


def test_the_reference_is_the_named_cell_else_the_best_by_validation():
    cells = [
        _c("adapter r=4", "adapter", 70.0, 72.0),
        _c("adapter r=16", "adapter", 75.0, 74.0),
        _c("head", "head", 90.0),
    ]
    assert reference_cell(cells).variant == "adapter r=16"  # best mean validation among adapter cells
    assert reference_cell(cells, "adapter r=4").variant == "adapter r=4"
    assert reference_cell(cells, "head").variant == "head"
    assert reference_cell(cells, "lora") is None


def test_no_section_below_three_cells_with_validation_curves(tmp_path):
    cells = [_c("adapter r=4", "adapter", 70.0), _c("head", "head", 60.0)]  # no val_acc in the history at all
    assert write_board(cells, tmp_path) is None and not list(tmp_path.iterdir())


def test_the_gain_interval_counts_test_images_where_both_cells_have_predictions():
    seeds_only = Gain(
        "d", "b", "lora", "adapter", 1.0, 3, 3, ci=(0.2, 1.8), verdict="win", noise="seeds (init, order)"
    )
    assert gain_interval(seeds_only) == ((0.2, 1.8), "win", "seeds (init, order) (t)")
    both = Gain(
        "d", "b", "lora", "adapter", 1.0, 3, 3, ci=(0.2, 1.8), verdict="win", noise="seeds (init, order)",
        all_noise=(-0.4, 2.4), all_noise_verdict="tie", all_noise_note="seeds (init, order) + 1000 test images",
    )  # fmt: skip
    # the test images widen the interval past 0: a tie, where the seeds alone said win
    assert gain_interval(both) == (
        (-0.4, 2.4),
        "tie",
        "seeds (init, order) + 1000 test images (bootstrap; verdict with t)",
    )
