"""What a person sees in a report: only comparisons that exist, the data each cell used, chance level,
n and the interval beside each verdict, rounded numbers, readable ticks."""

import json

import pytest
import yaml

from adaptertune.reports.builder import build_report
from adaptertune.reports.collect import ProtocolMismatchError, aggregate, collect_runs, readable
from adaptertune.reports.data_table import data_rows
from adaptertune.reports.tables import comparison_title, gains

PROTOCOL = {"input_size": [3, 32, 32], "epochs": 2, "selection": "best_val_top1", "split_seed": 0,
            "data_root": "/data/digits", "classes": [str(i) for i in range(10)]}  # fmt: skip


def write_run(root, method, seed, acc, rank=None, lr=1e-3, protocol=None, sizes=None, **extra):
    d = root / f"{method}-r{rank}-s{seed}-lr{lr:g}"
    d.mkdir(parents=True)
    summary = {
        "status": "success", "dataset": "digits", "backbone": "vit_t", "method": method, "rank": rank,
        "placement": "all" if rank else None, "seed": seed, "test_acc": acc, "test_acc_last": acc,
        "best_val_acc": acc, "trainable_params": {None: 1930, 1: 11_000, 2: 20_000, 4: 38_000, 8: 75_000}[rank],
        "total_params": 5_500_000, "train_seconds": 1.0, "weights_tag": "w", "weights_sha256": "abc",
        "num_classes": 10, "split_sizes": sizes or {"train": 180, "val": 20, "test": 50},
        "protocol": protocol or PROTOCOL, **extra,
    }  # fmt: skip
    (d / "summary.json").write_text(json.dumps(summary))
    config = {"method": method, "train": {"seed": seed, "lr": lr}, "backbone": {"name": "vit_t"},
              "adapter": {"rank": rank, "placement": "all", "init": "zero"} if rank else None}  # fmt: skip
    (d / "config.yaml").write_text(yaml.safe_dump(config))
    (d / "metrics.jsonl").write_text(json.dumps({"epoch": 1, "train_loss": 2.0, "val_acc": acc}) + "\n")


@pytest.fixture
def results(tmp_path):
    """Head-only and an adapter rank sweep, no full fine-tuning: 18.0 vs 11.5 % on 10 classes."""
    root = tmp_path / "runs"
    for seed in (0, 1):
        write_run(root, "head", seed, 11.5 + seed)
        for r, acc in ((1, 14.0), (2, 16.0), (4, 18.0), (8, 18.5)):
            write_run(root, "adapter", seed, acc + seed * 0.5, rank=r)
    return root


def test_headings_only_for_comparisons_that_exist(results, tmp_path):
    cells = aggregate(collect_runs(results))
    assert comparison_title(gains(cells)) == "Variants vs head-only"
    report = build_report(results, tmp_path / "report")
    html = (report.out_dir / "report.html").read_text()
    md = (report.out_dir / "table.md").read_text()
    for text in (html, md):
        assert "full fine-tuning" not in text.replace("0.20% of total params", "")
        assert "Variants vs head-only" in text


def test_no_comparison_no_heading(tmp_path):
    root = tmp_path / "runs"
    write_run(root, "adapter", 0, 20.0, rank=4)
    report = build_report(root, tmp_path / "report")
    for name in ("report.html", "table.md"):
        assert "Variants vs" not in (report.out_dir / name).read_text()


def test_data_each_cell_used_and_chance(results, tmp_path):
    rows = data_rows(aggregate(collect_runs(results)))
    assert len(rows) == 1
    row = rows[0]
    assert (row["dataset"], row["folder"], row["classes"], row["chance_pct"]) == ("digits", "digits", 10, "10.00")
    assert (row["train"], row["val"], row["test"]) == (180, 20, 50)
    assert "vit_t: head" in row["cells"] and "vit_t: adapter r=8" in row["cells"]
    html = (build_report(results, tmp_path / "report").out_dir / "report.html").read_text()
    assert "<h2>Data</h2>" in html and "<td>10.00</td>" in html and "<td>180</td>" in html


def test_data_table_counts_the_images_read_and_says_runs_and_images_skipped_apart(tmp_path, capsys):
    """issue 27: 1001 test files of which one could not be read: the table says 1000 read, 1 skipped."""
    from adaptertune.cli import main

    root = tmp_path / "runs"
    sizes = {"train": 180, "val": 20, "test": 1001}
    for seed in (0, 1):
        write_run(root, "head", seed, 11.5, sizes=sizes, unreadable_images={"train": 2, "test": 1})
    write_run(root, "adapter", 0, 20.0, rank=4, sizes=sizes, unreadable_images={"train": 2, "test": 1})
    (root / "failed").mkdir()
    (root / "failed" / "summary.json").write_text(json.dumps({"status": "failed", "error": "DataError: x"}))
    rows = data_rows(aggregate(collect_runs(root)))
    assert [(r["train"], r["val"], r["test"], r["skipped"]) for r in rows] == [(178, 20, 1000, "train 2, test 1")]
    assert main(["report", str(root), "--out", str(tmp_path / "r")]) == 0
    err = capsys.readouterr().err
    assert "1 run skipped (not finished) · 9 images skipped (unreadable, in 3 runs)" in err, err
    md = (tmp_path / "r" / "table.md").read_text()
    assert "| train | val | test | skipped | cells |" in md and "| 178 | 20 | 1000 | train 2, test 1 |" in md
    assert "1 run skipped (not finished) · 9 images skipped (unreadable, in 3 runs)" in md
    page = (tmp_path / "r" / "report.html").read_text()
    assert "<td>1000</td>" in page and "<td>1001</td>" not in page and "images skipped (unreadable" in page


def test_a_summary_from_before_the_unreadable_counts_reads_its_test_count(tmp_path):
    root = tmp_path / "runs"
    write_run(root, "head", 0, 11.5, sizes={"train": 180, "val": 20, "test": 50}, skipped_images=6,
              skipped_test_images=1)  # fmt: skip
    (row,) = data_rows(aggregate(collect_runs(root)))
    assert (row["train"], row["test"], row["skipped"]) == ("<= 180", 49, "test 1, train ?")


def test_no_skipped_column_without_skips(results):
    assert all("skipped" not in r for r in data_rows(aggregate(collect_runs(results))))


def test_cells_of_other_sizes_get_their_own_data_row(results):
    write_run(results, "head", 0, 30.0, lr=0.3, sizes={"train": 90, "val": 10, "test": 50})
    rows = data_rows(aggregate(collect_runs(results), split_protocols=True))
    assert sorted(r["train"] for r in rows) == [90, 180]


def test_every_verdict_has_n_and_its_interval(results, tmp_path):
    report = build_report(results, tmp_path / "report")
    assert report.gain_lines[0].startswith("adapter r=1 beats head-only on")
    for line in report.gain_lines[:-1]:  # the last line states the rule
        assert "n=2, 95% CI [" in line, line
    html = (report.out_dir / "report.html").read_text()
    md = (report.out_dir / "table.md").read_text()
    head = (
        "dataset | backbone | variant | vs | gain (points) | 95% CI (t) | 95% CI (bootstrap) | verdict | seeds won | "
    )
    assert head + "paired seeds |" in md  # one naming: the HTML gains table has table.md's columns, in its order
    ths = "".join(f"<th>{h.strip()}</th>" for h in (head + "paired seeds").split("|"))
    assert ths in html.replace("\n", ""), html


def test_protocol_numbers_are_rounded(results, tmp_path):
    assert readable(0.1 + 0.2) == "0.3" and readable([0.1 + 0.2, "a"]) == "[0.3, 'a']"
    write_run(results, "head", 0, 30.0, lr=0.1 + 0.2)
    with pytest.raises(ProtocolMismatchError) as e:
        aggregate(collect_runs(results))
    assert "0.30000000000000004" not in str(e.value) and "0.3" in str(e.value)
    cells = aggregate(collect_runs(results), split_protocols=True)
    assert any(c.variant == "head [lr=0.3]" for c in cells)
    protocol = {**PROTOCOL, "val_fraction": 0.1 + 0.2}
    root = tmp_path / "other"
    write_run(root, "head", 0, 30.0, protocol=protocol)
    html = (build_report(root, tmp_path / "r2").out_dir / "report.html").read_text()
    assert "0.30000000000000004" not in html and "<td>0.3</td>" in html


def test_plots_draw_chance_and_readable_ticks(results, tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    from matplotlib.axes import Axes

    seen = []
    real = Axes.axhline
    monkeypatch.setattr(
        Axes, "axhline", lambda ax, y=0, *a, **k: seen.append((y, k.get("label"))) or real(ax, y, *a, **k)
    )
    ticks = {}
    from adaptertune.reports import plots

    real_save = plots._save

    def save(fig, plt, path):
        fig.canvas.draw()
        ticks[path.name] = [[t.get_text() for t in ax.get_xticklabels()] for ax in fig.axes if ax.get_visible()]
        return real_save(fig, plt, path)

    monkeypatch.setattr(plots, "_save", save)
    build_report(results, tmp_path / "report")
    assert (10.0, "chance (10.0%)") in seen
    assert ticks["accuracy_vs_rank.png"][0] == ["1", "2", "4", "8"]
    assert ticks["training_curves.png"] == [["1"], ["1"]]  # one epoch: the tick 1, not 0.96 ... 1.04
    params = [t for t in ticks["accuracy_vs_params.png"][0] if t]
    assert params and all(t[-1] in "kMG" or t[-1].isdigit() for t in params) and len(params) <= 8


def test_protocol_values_are_printed_as_values(tmp_path):
    """issue 27: no Python reprs in the protocol table or the mismatch message (None, ['0', ...], {'k': v})."""
    from adaptertune.reports.values import plain

    assert (
        plain(None) == "none" and plain(["0", "1", "2"]) == "0, 1, 2" and plain({"a": 1, "b": None}) == "a=1, b=none"
    )
    assert plain([3, 224, 224]) == "3, 224, 224" and plain(0.1 + 0.2) == "0.3" and plain(True) == "true"
    assert plain([[1, 2], [3]]) == "[1, 2], [3]" and plain([]) == "none" and plain("x") == "x"
    root = tmp_path / "runs"
    write_run(root, "head", 0, 30.0, protocol={**PROTOCOL, "test_subset": None, "mix": {"mixup": 0.0}})
    page = (build_report(root, tmp_path / "r").out_dir / "report.html").read_text()
    protocol = page.split("<h2>Protocol</h2>")[1].split("</table>")[0]
    assert "<td>0, 1, 2, 3, 4, 5, 6, 7, 8, 9</td>" in protocol and "<td>none</td>" in protocol
    assert "<td>mixup=0</td>" in protocol and "None" not in protocol and "[" not in protocol and "'" not in protocol
    write_run(root, "head", 1, 30.0, protocol={**PROTOCOL, "test_subset": 5, "mix": {"mixup": 0.0}})
    with pytest.raises(ProtocolMismatchError) as e:
        aggregate(collect_runs(root))
    assert "protocol.test_subset: none vs 5" in str(e.value) and "None vs" not in str(e.value)


def test_a_tuned_value_on_the_edge_of_its_grid_is_warned_about(tmp_path, capsys):
    from adaptertune.cli import main

    def tuning(chosen):
        return {"keys": ["train.lr", "train.weight_decay"], "grid": {"train.lr": [0.01, 0.001, 0.1],
                "train.weight_decay": [0.0, 0.05, 0.1]}, "chosen": {"train.lr": chosen, "train.weight_decay": 0.05},
                "budget": {"epochs": 2, "seeds": [0]}, "rule": "best mean val top-1", "val_acc": []}  # fmt: skip

    root = tmp_path / "runs"
    for seed in (0, 1):
        write_run(root, "head", seed, 30.0, tuning=tuning(0.1))
        write_run(root, "adapter", seed, 40.0, rank=4, tuning=tuning(0.01))
    assert main(["report", str(root), "--out", str(tmp_path / "r")]) == 0
    err = capsys.readouterr().err
    top = "digits / vit_t / head: train.lr 0.1 is the top of its grid (0.001, 0.01, 0.1)"
    assert f"warning: {top}; the best value may lie beyond it: extend the grid upwards" in err, err
    assert "adapter r=4: train.lr 0.01 is" not in err and "weight_decay" not in err  # inside the grid
    for name in ("table.md", "report.html"):
        assert top in (tmp_path / "r" / name).read_text()


def test_a_chosen_value_at_the_bottom_edge_is_warned_about_too():
    from adaptertune.reports.tuning_table import grid_edges

    record = {"keys": ["train.weight_decay"], "grid": {"train.weight_decay": [0.1, 0.0]},
              "chosen": {"train.weight_decay": 0.0}}  # fmt: skip
    assert grid_edges(record) == [("train.weight_decay", 0.0, "bottom", [0.0, 0.1])]
    assert grid_edges({"keys": ["train.lr"], "grid": {"train.lr": [0.1]}, "chosen": {"train.lr": 0.1}}) == []
    assert grid_edges(None) == []
