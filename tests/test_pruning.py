"""Successive-halving tuning (``tune_budget.pruner``, sweeps/pruning.py): the spec, the engine's stop hook, the
Optuna trial of a run, replay of full curves, and a live pruned sweep on the tiny ViT."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest
import torch

from adaptertune.engine import Callback, Selection, fit
from adaptertune.errors import ConfigError, MissingExtraError, TuningError
from adaptertune.runs import RunStatus
from adaptertune.sweeps import InProcessExecutor, SweepSpec, plan_sweep, run_sweep
from adaptertune.sweeps.pruning import JOURNAL_FILE, PruneTrial, PruningCallback, replay
from adaptertune.sweeps.sweep import expand_grid
from adaptertune.sweeps.tuning_runs import choose, plan_tuning, replay_group
from adaptertune.sweeps.tuning_spec import RULE, Halving, TuneBudget, parse_budget, rule
from helpers import TINY_VIT

optuna = pytest.importorskip("optuna")


# ---------------------------------------------------------------- the spec
def test_budget_takes_a_patience_and_a_pruner():
    budget = parse_budget(
        {"epochs": 9, "early_stop": 2, "pruner": {"name": "halving", "min_epochs": 2, "reduction": 4}}
    )
    assert budget == TuneBudget(9, None, 2, Halving(2, 4))
    assert parse_budget({"pruner": "halving"}).pruner == Halving(1, 3)  # the defaults
    assert parse_budget({"pruner": {"name": "halving"}}).pruner == Halving(1, 3)
    assert parse_budget({"pruner": "none"}) == parse_budget({}) == parse_budget(None) == TuneBudget()
    assert parse_budget({"seeds": [0, 1]}).pruner is None


@pytest.mark.parametrize(
    "budget, match",
    [
        ({"pruner": "hyperband"}, "`tune_budget.pruner` must be none, halving or {name: halving, min_epochs: M"),
        ({"pruner": {"name": "median"}}, "must be none, halving or .* got {'name': 'median'}"),
        ({"pruner": {"name": "halving", "eta": 3}}, "got {'name': 'halving', 'eta': 3}"),
        ({"pruner": {"name": "halving", "min_epochs": 0}}, "`tune_budget.pruner.min_epochs` must be an integer >= 1"),
        ({"pruner": {"name": "halving", "reduction": 1}}, "`tune_budget.pruner.reduction` must be an integer >= 2"),
        ({"pruner": True}, "got True"),
        ({"early_stop": 0}, "`tune_budget.early_stop` must be a patience in epochs, an integer >= 1, got 0"),
        ({"pruner": "halving", "seeds": [0, 1]}, "needs one seed in `tune_budget.seeds`.*got \\[0, 1\\]"),
        ({"patience": 2}, "takes `epochs`, `seeds`, `early_stop`, `pruner` and `reuse`"),
    ],
)
def test_bad_pruner_values_are_one_line_errors(budget, match):
    with pytest.raises(ConfigError, match=match) as e:
        parse_budget(budget)
    assert "\n" not in str(e.value)


def test_the_rule_states_the_pruner():
    assert rule(None) == RULE
    text = rule(Halving(1, 3))
    assert text.startswith(RULE) and "successive halving (min_epochs 1, reduction 3)" in text
    assert "at epochs 1*3^k" in text and "best n//3 (at least the best one)" in text
    assert text.endswith("a pruned run is no candidate")


def test_optuna_is_an_extra_with_an_install_hint(monkeypatch):
    monkeypatch.setitem(sys.modules, "optuna", None)  # import optuna raises ImportError
    with pytest.raises(MissingExtraError, match=r"pip install 'adaptertune\[tune\]'"):
        replay({(1.0,): [1.0]}, [(1.0,)], 1, 2)


# ---------------------------------------------------------------- the engine: a callback ends training
class _StopAt(Callback):
    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_epoch_end(self, metrics):
        return metrics["epoch"] == self.epoch


def _fit(cfg, callbacks=(), **kw):
    g = torch.Generator().manual_seed(0)
    data = [(torch.randn(8, 6, generator=g), torch.randint(0, 3, (8,), generator=g), 0) for _ in range(5)]
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))
    cpu = torch.device("cpu")
    return fit(model, data[:3], data[3:4], data[4:], cfg, cpu, list(callbacks), **kw, selection=Selection.BEST_VAL)


def test_a_callback_that_returns_true_ends_training_after_that_epoch_and_resume_keeps_it(train_config, tmp_path):
    cfg = train_config(epochs=6, lr=0.05)
    ckpt = tmp_path / "ckpt.safetensors"
    stopped = _fit(cfg, [_StopAt(2)], checkpoint_path=ckpt)
    assert stopped.stop_requested_epoch == 2 and stopped.stopped_epoch is None and len(stopped.history) == 2
    assert stopped.best_val_acc == max(m["val_acc"] for m in stopped.history)
    full = _fit(cfg)
    assert full.stop_requested_epoch is None and len(full.history) == 6
    assert [m["val_acc"] for m in full.history[:2]] == [m["val_acc"] for m in stopped.history]  # a prefix
    resumed = _fit(cfg, checkpoint_path=ckpt, resume=True)  # the stop is in the checkpoint: no epoch more
    assert resumed.stop_requested_epoch == 2 and len(resumed.history) == 2


# ---------------------------------------------------------------- replay (synthetic curves, known answer)
A, B, C, D = (1e-3,), (3e-3,), (1e-2,), (3e-2,)
CURVES = {A: [50, 60, 70], B: [40, 80, 90], C: [55, 65, 66], D: [52, 52, 75]}


def test_replay_prunes_the_runs_that_fall_behind_at_each_rung():
    r = replay(CURVES, [A, B, C, D], min_epochs=1, reduction=2)
    # rung at epoch 1: A first (kept); B 40 < 50 (of 2, only the best goes on): pruned; C 55 best of 3;
    # D 52 is 2nd of 4 (the best 2 go on). Rung at epoch 2: A first; C 65 best of 2; D 52 < 65: pruned
    assert {k: (v.epochs, v.pruned_at_epoch, v.best_val) for k, v in r.runs.items()} == {
        A: (3, None, 70),
        B: (1, 1, 40),
        C: (3, None, 66),
        D: (2, 2, 52),
    }
    assert (r.chosen, r.epochs) == (A, 9)
    # the full grid trains 12 epochs and picks B, the late bloomer halving cut at epoch 1
    assert (r.full_chosen, r.full_epochs, r.same_pick) == (B, 12, False)


def test_replay_depends_on_the_order_and_applies_the_patience():
    r = replay(CURVES, [B, A, C, D], min_epochs=1, reduction=2)  # B first: nothing is ahead of it
    assert r.runs[B].pruned_at_epoch is None and r.chosen == B and r.same_pick
    flat = {A: [50, 50, 50, 80], B: [60, 61, 62, 63]}
    r = replay(flat, [A, B], min_epochs=1, reduction=2, patience=1)
    assert r.runs[A].epochs == 2 and r.runs[A].pruned_at_epoch is None  # patience 1: stops after epoch 2
    assert r.full_epochs == 2 + 4 and r.chosen == r.full_chosen == B
    with pytest.raises(ValueError, match="every combination"):
        replay(flat, [A], 1, 2)


# ---------------------------------------------------------------- one run's trial
def test_a_run_reports_its_best_so_far_and_a_restarted_attempt_continues_its_trial(tmp_path):
    journal = tmp_path / "tune" / "g" / JOURNAL_FILE
    spec = lambda run, lr: PruneTrial(str(journal), "s", run, {"train.lr": lr, "train.seed": 0}, Halving(1, 2))  # noqa: E731
    first = PruningCallback(spec("a", 1e-3))
    assert [first.on_epoch_end({"epoch": e, "val_acc": v}) for e, v in ((1, 60.0), (2, 50.0))] == [False, False]
    first.finish(type("S", (), {"pruned_at_epoch": None, "best_val_acc": 60.0})())
    second = PruningCallback(spec("b", 1e-2))
    assert second.on_epoch_end({"epoch": 1, "val_acc": 40.0}) is True  # 40 < 60 at the epoch-1 rung
    again = PruningCallback(spec("b", 1e-2))  # the attempt stopped before its checkpoint: the same trial
    assert again.trial.number == second.trial.number
    assert again.on_epoch_end({"epoch": 1, "val_acc": 40.0}) is True  # the decision made then, not a new one
    trials = again.study.get_trials()
    assert len(trials) == 2 and trials[0].intermediate_values == {1: 60.0, 2: 60.0}  # the best so far
    assert trials[1].params == {"train.lr": 1e-2, "train.seed": 0} and trials[1].user_attrs["run"] == "b"


# ---------------------------------------------------------------- a live pruned sweep on the tiny ViT
LRS = [1e-3, 1e-2, 3e-2]  # linear-probe-cached on image_folder: val 50/50/50, 100/100/100, 75/100/100


def _spec(root: Path, pruner) -> SweepSpec:
    base = {
        "backbone": TINY_VIT,
        "data": {"name": "imagefolder", "root": str(root), "val_fraction": 0.25, "num_workers": 0},
        "train": {"epochs": 3, "batch_size": 16, "device": "cpu", "warmup_epochs": 0},
    }
    grid = {"method": [{"method": "linear-probe-cached", "tune": {"train.lr": LRS}}]}
    return SweepSpec(name="p", base=base, grid=grid, tune_budget={"pruner": pruner})


def _curve(run_dir: Path) -> list[float]:
    return [json.loads(line)["val_acc"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def _summary(run_dir: Path) -> dict:
    return json.loads((run_dir / "summary.json").read_text())


HALVING = {"name": "halving", "min_epochs": 1, "reduction": 2}
GROUP = "tune/method=linear-probe-cached"
FINAL = "method=linear-probe-cached"


@pytest.fixture(scope="module")
def sweeps(image_folder, tmp_path_factory):
    """(full-grid tuning runs' folder, pruned sweep's folder): the full grid's tuning runs only, the pruned
    sweep end to end."""
    full = tmp_path_factory.mktemp("full")
    jobs = [p.job for p in plan_sweep(_spec(image_folder, "none"), full) if p.tuning]
    assert all(r.status is RunStatus.SUCCESS for r in InProcessExecutor().run(jobs))
    pruned = tmp_path_factory.mktemp("pruned")
    result = run_sweep(_spec(image_folder, HALVING), pruned, InProcessExecutor())
    assert [r.status for r in result.results] == ["success"] * 4, [r.error for r in result.results]
    return full, pruned


def test_pruned_runs_stop_record_it_and_are_no_candidates(sweeps):
    full, pruned = sweeps
    names = [f"seed=0,epochs=3,lr={lr:g}" for lr in LRS]
    for name in names:
        s = _summary(pruned / GROUP / name)
        assert s["status"] == "success" and s["tuning_run"]
        assert len(_curve(pruned / GROUP / name)) == (s["pruned_at_epoch"] or 3)
        assert _curve(pruned / GROUP / name) == _curve(full / GROUP / name)[: len(_curve(pruned / GROUP / name))]
    assert [_summary(pruned / GROUP / n)["pruned_at_epoch"] for n in names] == [None, None, 1]
    record = _summary(pruned / FINAL)["tuning"]
    assert record["pruner"] == HALVING and record["rule"] == rule(Halving(1, 2))
    assert [(t["run"], t["epochs"], t["pruned_at_epoch"]) for t in record["trained"]] == [
        (names[0], 3, None),
        (names[1], 3, None),
        (names[2], 1, 1),
    ]
    assert record["spent"]["epochs"] == 7 and record["spent"]["train_seconds"] > 0
    assert record["chosen"] == {"train.lr": 1e-2}
    trials = optuna.load_study(
        study_name="epochs=3,early_stop=None,halving=1-2",
        storage=optuna.storages.JournalStorage(
            optuna.storages.journal.JournalFileBackend(str(pruned / GROUP / JOURNAL_FILE))
        ),
    ).get_trials()
    assert [t.state.name for t in trials] == ["COMPLETE", "COMPLETE", "PRUNED"]
    assert [t.user_attrs["run"] for t in trials] == names


def test_choice_ignores_a_pruned_run_whose_best_would_win(sweeps, tmp_path):
    _, pruned = sweeps
    shutil.copytree(pruned / "tune", tmp_path / "tune")
    spec = _spec(Path("x"), HALVING)
    group = plan_tuning(expand_grid(spec), spec.tune_budget, tmp_path)[FINAL]
    files = [r.run_dir / "summary.json" for r in group.runs]  # lr 1e-3, 1e-2, 3e-2 (pruned at epoch 1)
    summaries = [json.loads(f.read_text()) for f in files]
    files[1].write_text(json.dumps({**summaries[1], "best_val_acc": 90.0}))
    files[2].write_text(json.dumps({**summaries[2], "best_val_acc": 100.0}))  # the best of all, but pruned
    assert choose(group)[0] == {"train.lr": 1e-2}
    files[2].write_text(json.dumps({**summaries[2], "best_val_acc": 100.0, "pruned_at_epoch": None}))
    assert choose(group)[0] == {"train.lr": 3e-2}  # not pruned, it wins
    files[2].write_text(json.dumps(summaries[2]))
    unpruned = _spec(Path("x"), "none")  # a search without a pruner refuses a pruned run
    group = plan_tuning(expand_grid(unpruned), unpruned.tune_budget, tmp_path)[FINAL]
    with pytest.raises(TuningError, match="lr=0.03' was pruned at epoch 1 by an earlier search with a pruner"):
        choose(group)


def test_replay_of_the_full_grid_matches_the_live_pruned_sweep(sweeps):
    full, pruned = sweeps
    order = [(lr,) for lr in LRS]  # the plan's order
    curves = {(lr,): _curve(full / GROUP / f"seed=0,epochs=3,lr={lr:g}") for lr in LRS}
    r = replay(curves, order, min_epochs=1, reduction=2)
    spec = _spec(Path("x"), "none")
    assert replay_group(plan_tuning(expand_grid(spec), None, full)[FINAL], Halving(1, 2)) == r  # from the folders
    with pytest.raises(TuningError, match="lr=0.03' was pruned; replay needs the full grid"):
        replay_group(plan_tuning(expand_grid(spec), None, pruned)[FINAL], Halving(1, 2))
    for lr in LRS:
        live = pruned / GROUP / f"seed=0,epochs=3,lr={lr:g}"
        assert (r.runs[(lr,)].epochs, r.runs[(lr,)].pruned_at_epoch) == (
            len(_curve(live)),
            _summary(live)["pruned_at_epoch"],
        )
    assert {"train.lr": r.chosen[0]} == _summary(pruned / FINAL)["tuning"]["chosen"]
    assert (r.epochs, r.full_epochs, r.same_pick) == (7, 9, True)


class _FailAt(Callback):
    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_epoch_end(self, metrics):
        if metrics["epoch"] == self.epoch:
            raise RuntimeError("stopped here")


@pytest.mark.slow
def test_a_half_finished_pruned_search_resumes_to_the_same_choice(sweeps, image_folder, tmp_path):
    _, pruned = sweeps
    spec = _spec(image_folder, HALVING)
    fail_second = lambda job: [_FailAt(2)] if job.name.endswith("lr=0.01") else []  # noqa: E731
    first = run_sweep(spec, tmp_path, InProcessExecutor(fail_second))
    assert [r.status for r in first.results] == ["success", "failed", "success", "failed"]
    again = run_sweep(spec, tmp_path, InProcessExecutor())  # resumes lr=0.01 from its epoch-1 checkpoint
    assert [r.status for r in again.results] == ["success", "success"], [r.error for r in again.results]
    assert _summary(tmp_path / FINAL)["tuning"]["chosen"] == _summary(pruned / FINAL)["tuning"]["chosen"]
    for name in (f"seed=0,epochs=3,lr={lr:g}" for lr in LRS):
        assert _curve(tmp_path / GROUP / name) == _curve(pruned / GROUP / name)
        assert (
            _summary(tmp_path / GROUP / name)["pruned_at_epoch"] == _summary(pruned / GROUP / name)["pruned_at_epoch"]
        )
    storage = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(tmp_path / GROUP / JOURNAL_FILE))
    )
    trials = optuna.load_study(study_name="epochs=3,early_stop=None,halving=1-2", storage=storage).get_trials()
    assert len(trials) == 3 and [t.state.name for t in trials] == ["COMPLETE", "COMPLETE", "PRUNED"]  # no duplicate
    run_sweep(spec, tmp_path, InProcessExecutor())  # all finished: no new trial
    assert len(optuna.load_study(study_name="epochs=3,early_stop=None,halving=1-2", storage=storage).get_trials()) == 3
