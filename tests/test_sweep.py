"""Sweeps: grid expansion and naming (pure), point states, skip-completed, failures recorded, the CLI."""

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from adaptertune.cli import main
from adaptertune.config_keys import set_dotted
from adaptertune.errors import ConfigError
from adaptertune.runs import RunStatus, RunSummary
from adaptertune.sweeps import (
    PRESETS,
    InProcessExecutor,
    SweepSpec,
    expand_grid,
    load_preset,
    plan_sweep,
    point_name,
    run_sweep,
)
from adaptertune.sweeps.sweep import format_value
from helpers import TINY_VIT

BASE = {"backbone": TINY_VIT, "data": {"name": "imagefolder", "root": "x"}}


def spec(grid, base=BASE, **kw):
    return SweepSpec(name="s", base=base, grid=grid, **kw)


# ---------------------------------------------------------------- pure
def test_expand_grid_is_the_product_in_axis_order_last_fastest():
    points = expand_grid(spec({"train.seed": [0, 1], "method": ["head", "full"]}))
    assert [p.name for p in points] == [
        "seed=0,method=head",
        "seed=0,method=full",
        "seed=1,method=head",
        "seed=1,method=full",
    ]
    assert points[3].config["train"]["seed"] == 1 and points[3].config["method"] == "full"
    assert points[3].config["backbone"] == BASE["backbone"]  # base kept
    assert BASE == {
        "backbone": TINY_VIT,
        "data": {"name": "imagefolder", "root": "x"},
    }


def test_bundle_values_set_several_keys_and_name_the_point():
    points = expand_grid(spec({"method": ["head", {"method": "adapter", "adapter.rank": 16}]}))
    assert [p.name for p in points] == ["method=head", "method=adapter,rank=16"]
    assert points[1].config["adapter"] == {"rank": 16} and "adapter" not in points[0].config
    assert points[1].values == {"method": "adapter", "adapter.rank": 16}


def test_dotted_keys_override_nested_base_values():
    base = {**BASE, "train": {"epochs": 3, "lr": 0.1}}
    (p,) = expand_grid(spec({"train.lr": [0.001], "backbone.args.img_size": [56]}, base=base))
    assert p.config["train"] == {"epochs": 3, "lr": 0.001}
    assert p.config["backbone"]["args"] == {"img_size": 56}
    assert p.name == "lr=0.001,img_size=56"


@pytest.mark.parametrize(
    "value, text",
    [("every:2", "every-2"), ([0, 5, 11], "0-5-11"), (1e-3, "0.001"), (True, "true"), (None, "none"), ("a/b", "a-b")],
)
def test_format_value_gives_safe_folder_text(value, text):
    assert format_value(value) == text


def test_point_name_uses_short_labels_and_bounds_length():
    assert point_name({"data.name": "cifar10", "backbone.name": "vit", "adapter.placement": "last:6"}) == (
        "dataset=cifar10,backbone=vit,placement=last-6"
    )
    long = point_name({f"train.k{i}": "x" * 30 for i in range(10)})
    assert len(long) <= 180 and long != point_name({f"train.k{i}": "y" * 30 for i in range(10)})


def test_set_dotted_creates_sections():
    d = {}
    set_dotted(d, "adapter.rank", 4)
    assert d == {"adapter": {"rank": 4}}


@pytest.mark.parametrize(
    "grid, match",
    [
        ({"adapter.rnak": [1]}, "Unknown config key 'adapter.rnak'"),
        ({"method": []}, "non-empty list"),
        ({"method": [{"bogus": 1}]}, "Unknown config key 'bogus'"),
        ({"train.lr": [0.001, "0.001"]}, "share the run folder"),
    ],
)
def test_bad_grids_are_rejected_with_the_bad_value(grid, match):
    with pytest.raises(ConfigError, match=match):
        expand_grid(spec(grid))


def test_spec_rejects_unknown_top_level_keys():
    with pytest.raises(ConfigError, match="Unknown sweep key 'grids'"):
        SweepSpec.from_dict({"grids": {}})


@pytest.mark.parametrize("name", PRESETS.names())
def test_every_preset_expands_to_its_stated_run_count(name):
    s = load_preset(name)
    assert s.meta["runs"] == len(expand_grid(s))
    assert "estimated_gpu_hours" in s.meta or "estimated_cpu_minutes" in s.meta


def test_paper_presets_use_the_paper_hyper_parameters():
    for name in ("paper-core", "paper-extended", "paper-rank", "paper-placement", "paper-init"):
        t = load_preset(name).base["train"]
        assert (t["lr"], t["weight_decay"], t["epochs"], t["warmup_epochs"], t["batch_size"]) == (
            0.001,
            0.05,
            50,
            5,
            128,
        )
        assert t["grad_clip"] == 1.0 and t["decay_all"] is True


# ---------------------------------------------------------------- orchestration with a fake training run
def finished_summary(cfg, acc: float) -> dict:
    """The summary.json of a finished run (the fields a report needs)."""
    protocol = {"dataset": cfg.data.name, "epochs": cfg.train.epochs}
    s = RunSummary(RunStatus.SUCCESS, cfg.method, cfg.backbone.name, cfg.data.name, seed=cfg.train.seed)
    s.test_acc, s.protocol = acc, protocol
    return s.to_dict()


@pytest.fixture
def fake_run(monkeypatch):
    """Replace runs.run: writes a success summary, or raises for method 'full' when asked to."""
    state = SimpleNamespace(calls=[], fail_full=False)

    def run(cfg, callbacks=(), overwrite=False, resume=False, lock=None):
        assert lock is not None and lock.held  # the executor holds the point's lock
        state.calls.append(cfg.out_dir)
        out = Path(cfg.out_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.yaml").write_text("method: x\n")
        if cfg.method == "full" and state.fail_full:
            raise RuntimeError("boom on full")

        class S:
            test_acc = 50.0

        (out / "summary.json").write_text(json.dumps(finished_summary(cfg, 50.0)))
        return S()

    monkeypatch.setattr("adaptertune.runs.run", run)
    return state


def test_completed_points_are_skipped(tmp_path, fake_run):
    s = spec({"train.seed": [0, 1], "method": ["head"]})
    r1 = run_sweep(s, tmp_path, InProcessExecutor())
    assert r1.count("success") == 2 and len(fake_run.calls) == 2
    s2 = spec({"train.seed": [0, 1, 2], "method": ["head"]})  # extended sweep: only the new point runs
    assert [p.state for p in plan_sweep(s2, tmp_path)] == [RunStatus.SUCCESS, RunStatus.SUCCESS, RunStatus.PENDING]
    r2 = run_sweep(s2, tmp_path, InProcessExecutor())
    assert len(fake_run.calls) == 3 and [r.name for r in r2.results] == ["seed=2,method=head"]


def test_failed_point_is_recorded_and_others_continue(tmp_path, fake_run):
    fake_run.fail_full = True
    s = spec({"method": ["head", "full", {"method": "adapter", "adapter.rank": 2}]})
    result = run_sweep(s, tmp_path, InProcessExecutor())
    assert [r.status for r in result.results] == ["success", "failed", "success"]
    summary = json.loads((tmp_path / "method=full" / "summary.json").read_text())
    assert summary["status"] == "failed" and "boom on full" in summary["error"]
    states = {p.point.name: p.state for p in plan_sweep(s, tmp_path)}
    assert states["method=full"] is RunStatus.FAILED and states["method=head"] is RunStatus.SUCCESS
    fake_run.fail_full = False  # a re-run retries only the failed point
    result = run_sweep(s, tmp_path, InProcessExecutor())
    assert [r.name for r in result.results] == ["method=full"] and result.count("success") == 1


def test_invalid_point_is_reported_per_point_and_not_run(tmp_path, fake_run):
    s = spec({"method": ["head", {"method": "head", "adapter.rank": 4}, "nosuch"]})
    planned = plan_sweep(s, tmp_path)
    assert [p.state for p in planned] == [RunStatus.PENDING, RunStatus.INVALID, RunStatus.INVALID]
    assert "takes no adapter options" in planned[1].detail and "Unknown method 'nosuch'" in planned[2].detail
    result = run_sweep(s, tmp_path, InProcessExecutor())
    assert len(fake_run.calls) == 1 and result.count("failed") == 2
    assert "Unknown method" in json.loads((tmp_path / "method=nosuch" / "summary.json").read_text())["error"]


def test_interrupted_point_counts_as_incomplete(tmp_path):
    (tmp_path / "method=head").mkdir()
    (tmp_path / "method=head" / "config.yaml").write_text("x: 1\n")
    (tmp_path / "method=full").mkdir()
    (tmp_path / "method=full" / "summary.json").write_text("{not json")
    planned = plan_sweep(spec({"method": ["head", "full"]}), tmp_path)
    assert [p.state for p in planned] == [RunStatus.INCOMPLETE, RunStatus.CORRUPT]
    assert [p.detail for p in planned] == [
        "no summary.json",
        "unreadable summary.json: Expecting property name enclosed in double quotes: line 1 column 2 (char 1)",
    ]


def test_cli_dry_run_lists_points_states_and_meta(tmp_path, capsys, fake_run):
    spec_file = tmp_path / "s.yaml"
    spec_file.write_text(
        "name: demo\nmeta: {runs: 2, estimated_gpu_hours: 0.5}\n"
        "base: {backbone: {name: test_vit, pretrained: false}, data: {name: imagefolder, root: x}}\n"
        "grid: {method: [head, bogus]}\n"
    )
    assert main(["sweep", str(spec_file), "--results-dir", str(tmp_path / "r"), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "sweep demo: 2 runs" in out and "estimated gpu hours: 0.5" in out
    assert "method=head" in out and "pending" in out and "invalid" in out and "Unknown method 'bogus'" in out
    assert not (tmp_path / "r").exists() and fake_run.calls == []


def test_cli_sweep_runs_and_returns_1_when_a_point_failed(tmp_path, capsys, fake_run):
    spec_file = tmp_path / "s.yaml"
    spec_file.write_text(
        "base: {backbone: {name: test_vit, pretrained: false}, data: {name: imagefolder, root: x}}\n"
        "grid: {method: [head, bogus]}\n"
    )
    assert main(["sweep", str(spec_file), "--results-dir", str(tmp_path / "r"), "--quiet"]) == 1
    out = capsys.readouterr()
    assert "1 ran, 1 failed" in out.out and "[1/1]" in out.err and "success method=head" in out.err


def test_cli_rejects_zero_threads(tmp_path, capsys, fake_run):
    spec_file = tmp_path / "s.yaml"
    spec_file.write_text(
        "base: {backbone: {name: test_vit}, data: {name: imagefolder, root: x}}\ngrid: {method: [head]}\n"
    )
    assert main(["sweep", str(spec_file), "--results-dir", str(tmp_path / "r"), "--threads", "0"]) == 2
    assert "--threads must be >= 1, got 0" in capsys.readouterr().err and fake_run.calls == []


def test_a_folder_that_is_not_a_run_is_never_deleted(tmp_path, fake_run):
    (tmp_path / "method=head").mkdir()
    (tmp_path / "method=head" / "precious.txt").write_text("mine")
    result = run_sweep(spec({"method": ["head"]}), tmp_path, InProcessExecutor())
    assert result.count("failed") == 1 and "not a run's (precious.txt)" in result.results[0].error
    assert (tmp_path / "method=head" / "precious.txt").read_text() == "mine" and fake_run.calls == []
