"""Early stopping (``train.early_stop``, engine/stopping.py): the patience rule, the loop, exact resume, the run's
protocol label."""

from __future__ import annotations

import math

import pytest
import torch

from adaptertune.config import TrainConfig
from adaptertune.engine import Callback, Selection, fit
from adaptertune.engine.stopping import patience_step
from adaptertune.errors import ConfigError
from adaptertune.runs import run
from helpers import TIMING

STOPPING = {"epochs": 40, "lr": 0.05, "early_stop": 2}  # train_config: 40 epochs at most, patience 2
HEAD_RUN = {"data": {"val_subset": 4}, "epochs": 4, "batch_size": 8, "seed": 0, "device": "cpu"}  # run_config


def _stops(accs: list[float], patience: int | None, min_delta: float = 0.0) -> tuple[int | None, int]:
    """(epoch early stopping ends at or None, best epoch) for a sequence of validation accuracies."""
    best, stale, best_epoch = -math.inf, 0, 0
    for epoch, acc in enumerate(accs, start=1):
        es = patience_step(acc, best, stale, patience, min_delta)
        stale = es.stale
        if es.best:
            best, best_epoch = acc, epoch
        if es.stop:
            return epoch, best_epoch
    return None, best_epoch


def test_patience_counts_epochs_since_the_last_improvement():
    accs = [50, 60, 60, 59, 61, 61, 58, 60, 70]
    assert _stops(accs, 2) == (4, 2)  # epochs 3 and 4 do not beat 60: stop after epoch 4, test epoch 2
    assert _stops(accs, 3) == (8, 5)  # 61 at epoch 5 resets the counter; 6, 7 and 8 are stale
    assert _stops(accs, 4) == (None, 9)  # 70 at epoch 9 comes in time
    assert _stops(accs, None) == (None, 9)  # off: all epochs, the best one tested
    assert _stops([50, 50, 50], 1) == (2, 1)  # a tie is no improvement; the first of equal epochs is kept


def test_min_delta_resets_the_patience_only_for_a_real_gain():
    accs = [50, 50.5, 51, 51.4, 53]
    # every epoch is a new best, but only by 0.5 or less: the counter runs on, the best model still moves
    assert _stops(accs, 3, min_delta=1.0) == (4, 4)
    assert _stops(accs, 3) == (None, 5)


# ---------------------------------------------------------------- the loop
def _data(n: int, seed: int) -> list:
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(8, 6, generator=g), torch.randint(0, 3, (8,), generator=g), 0) for _ in range(n)]


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.Dropout(0.3), torch.nn.Linear(16, 3))


def _fit(cfg: TrainConfig, val=True, **kw):
    train, val_b, test = _data(3, 0), _data(2, 1), _data(2, 2)  # random labels: validation soon stops improving
    selection = Selection.BEST_VAL if val else Selection.LAST_EPOCH
    return fit(_model(), train, val_b if val else None, test, cfg, torch.device("cpu"), **kw, selection=selection)


def _same(a, b) -> None:
    strip = lambda h: [{k: v for k, v in m.items() if k not in TIMING} for m in h]  # noqa: E731
    assert strip(a.history) == strip(b.history)
    assert (a.best_epoch, a.stopped_epoch, a.best_val_acc, a.test, a.test_last) == (
        b.best_epoch,
        b.stopped_epoch,
        b.best_val_acc,
        b.test,
        b.test_last,
    )
    for k in a.best_state:
        assert torch.equal(a.best_state[k], b.best_state[k]), k


def test_fit_stops_after_patience_epochs_and_tests_the_best_val_model(train_config):
    cfg = train_config(**STOPPING)
    r = _fit(cfg)
    accs = [m["val_acc"] for m in r.history]
    assert r.stopped_epoch is not None and r.stopped_epoch == len(r.history) < cfg.epochs
    assert (r.stopped_epoch, r.best_epoch) == _stops(accs, 2)
    assert r.best_val_acc == max(accs)
    # the same epochs, without the stop rule...
    full = _fit(train_config(**{**STOPPING, "early_stop": None, "epochs": r.stopped_epoch}))
    assert full.stopped_epoch is None and len(full.history) == r.stopped_epoch
    # ...differ only in the schedule's length (the cosine spans train.epochs in both)
    assert [m["lr"] for m in full.history] != [m["lr"] for m in r.history]


def test_early_stop_needs_a_validation_split(train_config):
    with pytest.raises(ConfigError, match=r"`train.early_stop` 2 needs a validation split") as e:
        _fit(train_config(**STOPPING), val=False)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("bad", [0, -1, "x", 1.5])
def test_early_stop_config_is_checked(bad):
    with pytest.raises(ConfigError, match="train.early_stop"):
        TrainConfig(early_stop=bad)
    with pytest.raises(ConfigError, match="train.early_stop_min_delta"):
        TrainConfig(early_stop_min_delta=-0.5)


class _StopAtEpoch(Exception):
    pass


class _InterruptAt(Callback):
    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_epoch_end(self, metrics):
        if metrics["epoch"] == self.epoch:  # before this epoch's checkpoint: resume redoes it
            raise _StopAtEpoch


def test_resume_keeps_the_patience_counter(train_config, tmp_path):
    ref = _fit(train_config(**STOPPING))
    accs = [m["val_acc"] for m in ref.history]
    # resume from the end of a stale epoch (the counter is > 0 in that checkpoint) that is not the last
    stale = [e for e in range(2, ref.stopped_epoch) if accs[e - 1] <= max(accs[: e - 1])]
    assert stale, accs
    ckpt = tmp_path / "ckpt.safetensors"
    with pytest.raises(_StopAtEpoch):
        _fit(train_config(**STOPPING), callbacks=[_InterruptAt(stale[0] + 1)], checkpoint_path=ckpt)
    resumed = _fit(train_config(**STOPPING), checkpoint_path=ckpt, resume=True)
    _same(ref, resumed)  # a counter lost on resume would stop one or more epochs later
    # the checkpoint written as it stopped: no epoch more
    again = _fit(train_config(**STOPPING), checkpoint_path=ckpt, resume=True)
    _same(ref, again)


# ---------------------------------------------------------------- the run folder
def test_the_run_records_its_budget_and_stopping_epoch(run_config, image_folder, tmp_path):
    # lr 1e-12: validation never moves
    stopped = run(run_config(image_folder, tmp_path / "es", "head", **HEAD_RUN, early_stop=1, lr=1e-12))
    assert stopped.protocol["budget"] == "early_stop(patience=1)"
    assert (stopped.stopped_epoch, stopped.best_epoch) == (2, 1)
    fixed = run(run_config(image_folder, tmp_path / "fixed", "head", **{**HEAD_RUN, "epochs": 1}))
    assert fixed.protocol["budget"] == "fixed" and fixed.stopped_epoch is None
    delta = run_config(image_folder, tmp_path / "x", "head", **HEAD_RUN, early_stop=3, early_stop_min_delta=0.5).train
    from adaptertune.runs.summary import budget_label

    assert budget_label(delta) == "early_stop(patience=3,min_delta=0.5)"


def test_a_run_without_validation_refuses_early_stop_before_making_its_folder(run_config, image_folder, tmp_path):
    cfg = run_config(image_folder, tmp_path / "run", "head", **HEAD_RUN, early_stop=2)
    cfg.data.val_subset, cfg.data.val_fraction = None, 0.0
    with pytest.raises(ConfigError, match="needs a validation split"):
        run(cfg)
    assert not (tmp_path / "run" / "summary.json").exists()
