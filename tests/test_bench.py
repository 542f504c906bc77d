"""The bench job: preset -> sweep -> report -> printed table (fast with a fake trainer, slow end to end)."""

import json
from pathlib import Path

import pytest
import yaml

from adaptertune.cli import main
from adaptertune.config_keys import options_section
from adaptertune.sweeps import PRESETS, load_preset

PROTOCOL = {"input_size": [3, 32, 32], "epochs": 2, "selection": "best_val_top1", "split_seed": 0}
FAKE_ACC = {"head": 50.0, "full": 70.0, 4: 65.0, 16: 75.0}


@pytest.fixture
def fake_trainer(monkeypatch):
    """runs.run replaced by one that writes a plausible finished run folder without training."""

    def run(cfg, callbacks=(), overwrite=False, resume=False, lock=None):
        out = Path(cfg.out_dir)
        out.mkdir(parents=True, exist_ok=True)
        rank = (options_section(cfg.to_dict()) or {}).get("rank")  # options may still be a mapping before resolution
        acc = FAKE_ACC[rank or cfg.method] + cfg.train.seed
        (out / "config.yaml").write_text(yaml.safe_dump(cfg.to_dict()))
        (out / "metrics.jsonl").write_text(json.dumps({"epoch": 1, "train_loss": 1.0, "val_acc": acc}) + "\n")
        summary = {
            "status": "success",
            "dataset": cfg.data.name,
            "backbone": cfg.backbone.name,
            "method": cfg.method,
            "rank": rank,
            "seed": cfg.train.seed,
            "test_acc": acc,
            "trainable_params": {"head": 10, "full": 1000}.get(cfg.method, rank),
            "total_params": 1000,
            "weights_tag": "x",
            "weights_sha256": "y",
            "protocol": PROTOCOL,
        }
        (out / "summary.json").write_text(json.dumps(summary))
        return type("S", (), {"test_acc": acc})()

    monkeypatch.setattr("adaptertune.runs.run", run)


def test_presets_are_registered():
    assert {"quick", "paper-cpu", "test", "paper-core", "paper-rank"} <= set(PRESETS.names())
    quick = load_preset("quick")
    assert quick.base["backbone"]["name"] == "vit_small_patch14_dinov2.imgfocus"
    assert quick.base["data"]["name"] == "fashion-mnist" and quick.base["data"]["subset"] == 256


def test_bench_runs_the_preset_then_prints_the_report(tmp_path, capsys, fake_trainer):
    out = tmp_path / "bench"
    assert main(["bench", "--preset", "test", "--out-dir", str(out), "--quiet"]) == 0
    captured = capsys.readouterr()
    assert "| imagefolder | 50.50 ± 0.71 | 70.50 ± 0.71 | 65.50 ± 0.71 | **75.50 ± 0.71** |" in captured.out
    assert (
        "adapter r=16 beats head-only on 1/1 dataset (ties 0, losses 0; mean gain +25.00 points; "
        "2/2 paired seeds won)" in captured.out
    )
    assert "[8/8]" in captured.err  # progress lines
    assert (out / "report" / "report.html").is_file() and (out / "report" / "table.tex").is_file()
    assert len([p for p in out.iterdir() if (p / "summary.json").is_file()]) == 8
    # a second bench skips every finished point and reports again
    assert main(["bench", "--preset", "test", "--out-dir", str(out), "--quiet"]) == 0
    assert "sweep: 0 ran, 0 failed" in capsys.readouterr().out


def test_bench_dry_run_lists_the_preset(tmp_path, capsys):
    assert main(["bench", "--preset", "quick", "--out-dir", str(tmp_path / "q"), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "sweep quick: 30 runs" in out and "tuning run: validated, never tested" in out
    assert "estimated cpu minutes" in out and "seed=2,method=adapter,rank=16" in out
    assert not (tmp_path / "q").exists()


def test_bench_unknown_preset_lists_the_presets(capsys):
    assert main(["bench", "--preset", "nosuch"]) == 2
    err = capsys.readouterr().err
    assert "'nosuch' is neither a sweep spec file nor a preset; presets: " in err
    assert all(name in err for name in ("quick", "paper-core", "methods", "rank"))


@pytest.mark.slow
def test_bench_test_preset_end_to_end(tmp_path, capsys):
    out = tmp_path / "bench"
    assert main(["bench", "--preset", "test", "--out-dir", str(out), "--quiet"]) == 0
    text = capsys.readouterr().out
    assert "| dataset | head | full | adapter r=4 | adapter r=16 |" in text and "beats head-only" in text
    files = {p.name for p in (out / "report").iterdir()}
    assert {"results.csv", "table.md", "table.tex", "report.html", "training_curves.png"} <= files


@pytest.mark.slow
def test_sweep_with_two_worker_processes(tmp_path, capsys):
    out = tmp_path / "sweep"
    spec = load_preset("test", out)
    spec_file = tmp_path / "spec.yaml"
    spec.grid = {"train.seed": [0], "method": ["head", {"method": "adapter", "adapter.rank": 4}]}
    spec.meta = {}
    spec_file.write_text(yaml.safe_dump({"name": "two", "base": spec.base, "grid": spec.grid}, sort_keys=False))
    assert main(["sweep", str(spec_file), "--results-dir", str(out), "--workers", "2"]) == 0
    assert all(
        json.loads((out / n / "summary.json").read_text())["status"] == "success"
        for n in (
            "seed=0,method=head",
            "seed=0,method=adapter,rank=4",
        )
    )
