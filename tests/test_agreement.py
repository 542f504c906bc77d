"""Disagreement, ensembles and the seeds + test-images columns, on hand-made arrays and hand-written run folders."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
import yaml

from adaptertune.errors import AdapterTuneError, CheckpointError
from adaptertune.reports.agreement import (
    disagreement,
    disagreement_matrix,
    ensemble_accuracy,
    ensemble_over_seeds,
    top_k,
)
from adaptertune.reports.bootstrap import mean_interval
from adaptertune.reports.builder import build_report
from adaptertune.reports.collect import aggregate, collect_runs
from adaptertune.reports.noise import accuracy_interval, seed_noise
from adaptertune.reports.per_image import (
    AGREEMENT_NOTE,
    ENSEMBLE_NOTE,
    MATRIX_MAX,
    POOLED_RULE,
    TOP_PAIRS,
    agreement_markdown,
)
from adaptertune.reports.predictions import aligned, load
from adaptertune.reports.tables import gains
from adaptertune.runs.folder import PREDICTIONS_FILE
from adaptertune.runs.predictions import Predictions
from test_report import write_run


def test_disagreement_by_hand():
    assert disagreement([0, 1, 2, 3], [0, 1, 0, 0]) == 0.5
    assert disagreement([4, 4], [4, 4]) == 0.0
    with pytest.raises(AdapterTuneError, match="aligned"):
        disagreement([0, 1], [0, 1, 2])


def test_disagreement_matrix_averages_over_shared_seeds_only():
    preds = {
        "a": {0: np.array([0, 0, 0, 0]), 1: np.array([1, 1, 1, 1])},
        "b": {0: np.array([0, 0, 1, 1])},  # seed 0 only
        "c": {0: np.array([0, 0, 0, 0]), 1: np.array([1, 1, 1, 0])},
    }
    m = disagreement_matrix(preds)
    assert m[("a", "b")] == (0.5, 1)
    assert m[("a", "c")] == (0.125, 2)  # (0 + 1/4) / 2
    assert m[("b", "c")] == (0.5, 1) and len(m) == 3


def test_ensemble_fixes_what_each_member_gets_wrong():
    label = np.array([0, 1, 2])
    a = np.array([[0.6, 0.4, 0.0], [0.0, 0.6, 0.4], [0.5, 0.0, 0.45]])  # wrong on image 2
    b = np.array([[0.4, 0.6, 0.0], [0.0, 0.7, 0.3], [0.0, 0.2, 0.8]])  # wrong on image 0
    assert ensemble_accuracy([a], label) == pytest.approx(2 / 3)
    assert ensemble_accuracy([b], label) == pytest.approx(2 / 3)
    assert ensemble_accuracy([a, b], label) == 1.0
    probs = {"a": {0: a, 1: a}, "b": {0: b}}
    labels = {0: label, 1: label}
    assert ensemble_over_seeds(probs, labels, ["a", "b"]) == (1.0, 1)  # seed 1 lacks b
    assert ensemble_over_seeds(probs, labels, ["a"]) == (pytest.approx(2 / 3), 2)


def test_top_k_ranks_by_the_validation_accuracy_given():
    val = {"lora": 80.0, "adapter": 82.0, "head": 70.0, "vpt": 80.0}
    assert top_k(val, 2) == ["adapter", "lora"]  # lora before vpt: tie broken by name
    assert top_k(val, 3) == ["adapter", "lora", "vpt"]
    with pytest.raises(AdapterTuneError, match="k=5"):
        top_k(val, 5)


def _preds(index, label, pred, classes=3):
    """One-hot-ish rows: 0.8 on a right top-1; on a wrong one 0.6, with 0.3 left on the label."""
    label, pred = np.asarray(label), np.asarray(pred)
    prob = np.full((len(label), classes), 0.1)
    rows = np.arange(len(label))
    prob[rows, label] = np.where(pred == label, 0.8, 0.3)
    prob[rows, pred] = np.where(pred == label, 0.8, 0.6)
    return Predictions(np.asarray(index), label, pred, prob.astype(np.float16))


def test_aligned_matches_images_by_index_and_refuses_other_labels():
    a = _preds([0, 1, 2, 3], [0, 1, 2, 0], [0, 1, 1, 0])
    b = _preds([3, 1, 0], [0, 1, 0], [2, 1, 0])  # other order, image 2 missing
    x, y = aligned([a, b])
    assert x.index.tolist() == y.index.tolist() == [0, 1, 3]
    assert x.pred.tolist() == [0, 1, 0] and y.pred.tolist() == [0, 1, 2] and y.label.tolist() == [0, 1, 0]
    with pytest.raises(CheckpointError, match="Test image 1 has label 1 in one run and 2"):
        aligned([a, _preds([0, 1], [0, 2], [0, 0])])


N = 40  # a small test set: 2 images are 5 points


def _write(root, dataset, method, seed, correct, rank=None, val=None, pred_wrong=1):
    """A run whose summary accuracy is its predictions' accuracy; labels i % 3; wrong images predict
    ``(label + pred_wrong) % 3``."""
    label = np.arange(N) % 3
    pred = np.where(correct, label, (label + pred_wrong) % 3)
    d = write_run(root, dataset, method, seed, 100.0 * correct.mean(), rank=rank)
    p = _preds(np.arange(N), label, pred)
    np.savez(d / PREDICTIONS_FILE, index=p.index, label=p.label, pred=p.pred, prob=p.prob)
    if val is not None:  # the validation accuracy the ensemble ranks by
        summary = json.loads((d / "summary.json").read_text())
        (d / "summary.json").write_text(json.dumps(summary | {"best_val_acc": val}))
    return d


@pytest.fixture
def pred_runs(tmp_path):
    """Per dataset, 3 seeds, the same at every seed: head right on images 0..9, full on 0..19, adapter r=16 on
    0..19 and 38, 39 (+5 points over full at every seed: the t-interval has zero width), adapter r=4 on
    10..39 with other mistakes. Validation accuracy ranks them r=4 > r=16 > full > head."""
    root = tmp_path / "runs"
    i = np.arange(N)
    for dataset in ("fashion-mnist", "mnist-5k"):
        for seed in range(3):
            _write(root, dataset, "head", seed, i < 10, val=50.0)
            _write(root, dataset, "full", seed, i < 20, val=60.0)
            _write(root, dataset, "adapter", seed, (i < 20) | (i >= 38), rank=16, val=65.0)
            _write(root, dataset, "adapter", seed, i >= 10, rank=4, val=70.0, pred_wrong=2)
    return root


def test_report_counts_test_noise_and_writes_agreement_and_ensembles(pred_runs, tmp_path):
    build_report(pred_runs, tmp_path / "report")
    rows = list(csv.DictReader((tmp_path / "report" / "gains.csv").open()))
    g = next(
        r for r in rows if r["dataset"] == "mnist-5k" and r["variant"] == "adapter r=16" and r["reference"] == "full"
    )
    assert g["verdict"] == "win" and float(g["ci_low"]) == float(g["ci_high"]) == 5.0  # seeds only
    assert float(g["all_noise_low"]) <= 0.0 < 5.0 < float(g["all_noise_high"])  # 2 of 40 images
    assert g["all_noise_verdict"] == "tie"
    assert g["noise"] == "seeds (init, order)" and g["all_noise_covers"] == "seeds (init, order) + 40 test images"
    table = (tmp_path / "report" / "table.md").read_text()
    assert "95% CI (seeds + images)" in table and "Verdict (seeds + test images)" in table
    assert "verdict (seeds + images)" in (tmp_path / "report" / "report.html").read_text()

    agree = {
        (r["dataset"], r["variant_a"], r["variant_b"]): r
        for r in csv.DictReader((tmp_path / "report" / "agreement.csv").open())
    }
    assert len(agree) == 12  # 6 pairs x 2 datasets
    assert agree[("fashion-mnist", "head", "full")]["disagreement_pct"] == "25.00"  # images 10..19
    assert agree[("fashion-mnist", "full", "adapter r=16")]["disagreement_pct"] == "5.00"  # 38, 39
    # r=16 right and r=4 wrong on 0..9, the reverse on 20..37; both wrong nowhere: 28 of 40
    assert agree[("mnist-5k", "adapter r=4", "adapter r=16")]["disagreement_pct"] == "70.00"
    assert agree[("mnist-5k", "head", "full")]["n_seeds"] == "3"

    ens = {(r["dataset"], r["k"]): r for r in csv.DictReader((tmp_path / "report" / "ensemble.csv").open())}
    two = ens[("fashion-mnist", "2")]
    assert two["members"] == "adapter r=4 + adapter r=16"  # by validation, best first
    assert two["top_member_acc"] == "75.00" and two["ensemble_acc"] == "100.00" and two["gain"] == "+25.00"
    assert ens[("mnist-5k", "3")]["members"] == "adapter r=4 + adapter r=16 + full"

    pooled = {(r["variant"], r["reference"]): r for r in csv.DictReader((tmp_path / "report" / "pooled.csv").open())}
    p = pooled[("adapter r=16", "full")]
    assert p["k"] == "2" and float(p["mean_diff"]) == pytest.approx(5.0)
    assert float(p["low"]) < 5.0 < float(p["high"]) and p["verdict"] == ("win" if float(p["low"]) > 0 else "tie")
    assert p["covers"].startswith("pooled over 2 datasets, equal weight")


def test_without_predictions_the_gains_table_is_todays(tmp_path):
    root = tmp_path / "runs"
    for seed in range(3):
        write_run(root, "mnist-5k", "head", seed, 60.0 + seed)
        write_run(root, "mnist-5k", "adapter", seed, 70.0 + 2 * seed, rank=4)
    build_report(root, tmp_path / "report")
    header = (tmp_path / "report" / "gains.csv").read_text().splitlines()[0]
    assert "all_noise" not in header and header.endswith("seeds_won,verdict")
    assert "seeds + images" not in (tmp_path / "report" / "table.md").read_text()
    assert not any((tmp_path / "report" / f).exists() for f in ("agreement.csv", "ensemble.csv", "pooled.csv"))


def test_noise_names_the_subset_when_seeds_draw_it_and_skips_cross_validation(pred_runs):
    for cfg in pred_runs.glob("dataset=mnist-5k,*/config.yaml"):
        config = yaml.safe_load(cfg.read_text())
        cfg.write_text(yaml.safe_dump(config | {"data": {"subset_per_seed": True}}))
    cells = aggregate(collect_runs(pred_runs))
    by = {(c.dataset, c.variant): c for c in cells}
    assert seed_noise(by[("mnist-5k", "full")]) == "seeds (init, order, subset)"
    assert seed_noise(by[("fashion-mnist", "full")]) == "seeds (init, order)"
    g = next(
        g for g in gains(cells) if g.dataset == "mnist-5k" and g.variant == "adapter r=16" and g.baseline == "full"
    )
    assert g.all_noise_note == "seeds (init, order, subset) + 40 test images"
    by[("fashion-mnist", "full")].runs[1].predictions = None  # a run without the file (e.g. under torchrun)
    g = next(
        g
        for g in gains(cells)
        if g.dataset == "fashion-mnist" and g.variant == "adapter r=16" and g.baseline == "full"
    )
    assert math.isnan(g.all_noise[0]) and g.all_noise_verdict == "" and g.verdict == "win"
    assert g.all_noise_note == "no predictions at 1 of 3 paired seeds"
    for c in cells:  # cross-validation: each fold tests other images
        for r in c.runs:
            r.fold = r.seed
    g = next(g for g in gains(cells) if g.dataset == "mnist-5k" and g.baseline == "full")
    assert g.all_noise_note.startswith("not computed (cross-validation") and g.noise.endswith("x folds")


def test_a_broken_predictions_file_is_named(tmp_path):
    path = tmp_path / PREDICTIONS_FILE
    np.savez(path, index=np.arange(3), label=np.arange(3), pred=np.arange(3))
    with pytest.raises(CheckpointError, match="corrupt: it lacks the array 'prob'"):
        load(path)
    with pytest.raises(CheckpointError, match="is not a run folder's predictions.npz"):
        load(tmp_path / "other.npz")


def test_a_broken_file_leaves_its_seed_out_and_says_so(pred_runs, tmp_path, caplog):
    broken = next(pred_runs.glob("dataset=mnist-5k,method=full,rank=None,seed=1"))
    (broken / PREDICTIONS_FILE).write_bytes(b"not an npz")
    build_report(pred_runs, tmp_path / "report")
    agree = list(csv.DictReader((tmp_path / "report" / "agreement.csv").open()))
    assert {r["n_seeds"] for r in agree if r["dataset"] == "mnist-5k"} == {"2"}
    gains_csv = list(csv.DictReader((tmp_path / "report" / "gains.csv").open()))
    g = next(r for r in gains_csv if r["dataset"] == "mnist-5k" and r["reference"] == "full")
    assert g["all_noise_low"] == "" and g["all_noise_covers"].startswith("not computed (")
    assert "predictions.npz' is corrupt" in g["all_noise_covers"]
    assert "left out of agreement" in caplog.text


def test_the_report_shows_disagreement_ensembles_and_pooled_gains_with_their_rules(pred_runs, tmp_path):
    build_report(pred_runs, tmp_path / "report")
    md = (tmp_path / "report" / "table.md").read_text()
    section = md.split("## Per test image: disagreement, ensembles, pooled gains")[1]
    assert "**mnist-5k / vit_s** (3 seeds, 40 test images)" in section
    assert "| disagreement % | head | full | adapter r=4 |" in section  # lower triangle, rows from the 2nd
    assert "| adapter r=16 | 30.00 | 5.00 | 70.00 |" in section and AGREEMENT_NOTE in section
    ens = "| fashion-mnist | vit_s | 2 | adapter r=4 + adapter r=16 | 100.00 | 75.00 | +25.00 | 75.00 (adapter r=4) |"
    assert ens in section and ENSEMBLE_NOTE in section
    ens_csv = next(csv.DictReader((tmp_path / "report" / "ensemble.csv").open()))
    assert (ens_csv["best_member"], ens_csv["best_member_acc"]) == ("adapter r=4", "75.00")
    pooled = next(line for line in section.splitlines() if line.startswith("| vit_s | adapter r=16 | full |"))
    assert "| fashion-mnist, mnist-5k | +5.00 | [+" in pooled and pooled.endswith(
        "| seeds (init, order) + test images |"
    )
    assert "Pooled over the datasets listed, equal weight" in section and POOLED_RULE in section
    html = (tmp_path / "report" / "report.html").read_text()
    assert "<h2>Per test image: disagreement, ensembles, pooled gains</h2>" in html
    assert "<h3>Ensembles of the top methods</h3>" in html and "<td>adapter r=16</td><td>30.00</td>" in html


def test_many_variants_show_the_most_and_least_disagreeing_pairs():
    variants = [f"m{i}" for i in range(MATRIX_MAX + 1)]
    rows = [
        {"dataset": "d", "backbone": "b", "variant_a": a, "variant_b": b, "n_seeds": 2, "n_images": 10,
         "disagreement_pct": f"{10 * i + j:.2f}"}
        for i, a in enumerate(variants) for j, b in enumerate(variants) if j > i
    ]  # fmt: skip
    md = agreement_markdown(rows)
    lines = [line for line in md.splitlines() if line.startswith("| m")]
    assert len(lines) == 2 * TOP_PAIRS and lines[0] == "| m7 vs m8 | 78.00 |" and lines[-1] == "| m0 vs m1 | 1.00 |"
    assert "| ... | |" in md and f"of {len(rows)} pairs (all in agreement.csv)" in md


def test_a_cells_accuracy_interval_counts_seeds_and_test_images(pred_runs):
    by = {(c.dataset, c.variant): c for c in aggregate(collect_runs(pred_runs))}
    head = by[("mnist-5k", "head")]
    iv = accuracy_interval(head)
    want = mean_interval([100.0 * (np.arange(N) < 10)] * 3)  # right on images 0..9 at every seed
    assert (iv.mean, iv.low, iv.high, iv.n_seeds, iv.n_images) == (25.0, want.low, want.high, 3, N)
    assert iv.low < 25.0 < iv.high  # the seeds agree exactly: the width is the test images' alone
    head.runs[2].predictions = None
    assert accuracy_interval(head) == "no predictions at 1 of 3 seeds"
