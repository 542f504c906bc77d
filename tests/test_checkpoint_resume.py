"""Exact resume from the training checkpoint (engine/checkpoint.py): a run killed (SIGKILL) or stopped at any point and
resumed ends bitwise identical to an uninterrupted run with the same seed (CPU)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from adaptertune.cli import main
from adaptertune.config import RunConfig
from adaptertune.data.sampling import ResumableSampler, ShardedEvalSampler, split_sampler
from adaptertune.engine import load_tensors
from adaptertune.runs import CHECKPOINT_FILE, run
from helpers import TIMING, TINY_VIT, make_image_folder

HELPER = Path(__file__).with_name("resume_helper.py")
THREADS = 1


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    # 4 classes x 8 train images -> 28 train + 4 val (10%); batch 8 -> 4 steps/epoch, 2 epochs = 8 steps
    return make_image_folder(tmp_path_factory.mktemp("resume_data"), n_classes=4, n_train=8, n_test=2, size=36)


def config(folder: Path, out: Path) -> dict:
    return {
        "backbone": TINY_VIT,
        "data": {"name": "imagefolder", "root": str(folder), "num_workers": 0},
        "method": "adapter",
        "adapter": {"rank": 4, "dropout": 0.25},  # dropout: the global RNG must be restored too
        "train": {"epochs": 2, "batch_size": 8, "seed": 3, "checkpoint_every_steps": 3, "device": "cpu"},
        "out_dir": str(out),
    }


@pytest.fixture(scope="module")
def reference(folder, tmp_path_factory):
    out = tmp_path_factory.mktemp("ref") / "run"
    with _threads(THREADS):
        run(RunConfig.from_dict(config(folder, out)))
    return out


class _threads:
    def __init__(self, n: int) -> None:
        self.n = n

    def __enter__(self):
        self.old = torch.get_num_threads()
        torch.set_num_threads(self.n)

    def __exit__(self, *exc):
        torch.set_num_threads(self.old)


def assert_same_run(a: Path, b: Path) -> None:
    sa, sb = (json.loads((d / "summary.json").read_text()) for d in (a, b))
    for key in ("status", "test_acc", "test_top5", "test_acc_last", "best_val_acc", "best_epoch"):
        assert sa[key] == sb[key], key
    ma, mb = (
        [{k: v for k, v in json.loads(line).items() if k not in TIMING} for line in open(d / "metrics.jsonl")]
        for d in (a, b)
    )
    for x, y in zip(ma, mb, strict=True):  # a resumed epoch lists the step losses after its checkpoint
        sa, sb = x.pop("step_loss"), y.pop("step_loss")
        assert sb and sa[len(sa) - len(sb) :] == sb
    assert ma == mb
    ta, _ = load_tensors(a / "adaptertune_weights.safetensors")
    tb, _ = load_tensors(b / "adaptertune_weights.safetensors")
    assert ta.keys() == tb.keys()
    for k in ta:
        assert torch.equal(ta[k], tb[k]), k
    assert not (b / CHECKPOINT_FILE).exists()  # a finished run drops its resume checkpoint


def kill_and_resume(folder: Path, out: Path, mode: str, n: int) -> None:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path), RESUME_TEST_THREADS=str(THREADS))
    proc = subprocess.run(
        [sys.executable, str(HELPER), json.dumps(config(folder, out)), mode, str(n)], env=env, capture_output=True
    )
    assert proc.returncode == -9, proc.stderr.decode()[-2000:]  # SIGKILL
    assert not (out / "summary.json").exists()
    with _threads(THREADS):
        assert main(["train", "--resume", str(out), "--quiet"]) == 0


# 4 steps per epoch; checkpoints after steps 3, 4 (epoch end), 6 and 8 (epoch end)
def test_sigkill_mid_epoch_then_resume_is_bitwise_identical(folder, reference, tmp_path):
    # killed after step 7: resumes inside epoch 2 from the step-6 checkpoint (skips 2 batches, redoes one)
    kill_and_resume(folder, tmp_path / "run", "step", 7)
    assert_same_run(reference, tmp_path / "run")


@pytest.mark.slow
@pytest.mark.parametrize(
    "mode,n",
    [("epoch", 1), ("checkpoint", 2), ("step", 1)],
    ids=["between-epochs", "during-checkpoint-write", "before-first-checkpoint"],
)
def test_sigkill_other_points_then_resume(folder, reference, tmp_path, mode, n):
    kill_and_resume(folder, tmp_path / "run", mode, n)
    assert_same_run(reference, tmp_path / "run")


class StopAtStep(Exception):
    pass


class _Stop:
    def __init__(self, n: int) -> None:
        self.n, self.start_step = n, None

    def on_train_start(self, total_steps, steps_per_epoch, start_step):
        self.start_step = start_step  # what a progress bar starts from

    def on_step(self, step, loss, lr):
        if step + 1 == self.n:
            raise StopAtStep

    def on_epoch_end(self, metrics):
        pass


# stopped before any checkpoint (from scratch), after the step-3 checkpoint, after the step-6 checkpoint
@pytest.mark.parametrize(
    "stop_after", [pytest.param(3, marks=pytest.mark.slow), pytest.param(4, marks=pytest.mark.slow), 7]
)
def test_interrupt_then_resume_in_process(folder, reference, tmp_path, stop_after):
    out = tmp_path / "run"
    cfg = RunConfig.from_dict(config(folder, out))
    with _threads(THREADS), pytest.raises(StopAtStep):
        run(cfg, [_Stop(stop_after)])
    assert json.loads((out / "summary.json").read_text())["status"] == "failed"
    resumed = _Stop(-1)
    with _threads(THREADS):
        run(cfg, [resumed], resume=True)
    assert_same_run(reference, out)
    assert resumed.start_step == {3: 0, 4: 3, 7: 6}[stop_after]  # the last checkpoint's step


def test_resume_refuses_finished_or_changed_runs(folder, reference, tmp_path):
    assert main(["train", "--resume", str(reference), "--quiet"]) == 2
    out = tmp_path / "run"
    with _threads(THREADS), pytest.raises(StopAtStep):
        run(RunConfig.from_dict(config(folder, out)), [_Stop(2)])
    assert main(["train", "--resume", str(out), "--lr", "0.5", "--quiet"]) == 2  # a changed config
    assert main(["train", "--resume", str(tmp_path / "nothing"), "--quiet"]) == 2


def test_sampler_order_resumes_and_shards():
    s = ResumableSampler(10, seed=1, batch_size=3)
    s.set_epoch(2)
    full = list(s)
    assert sorted(i for _, i in full) == list(range(10)) and {e for e, _ in full} == {2}
    s.set_epoch(1)
    assert list(s) != full  # a new order each epoch
    s.set_epoch(2)
    s.skip_batches(2)
    assert list(s) == full[6:] and len(s) == 4
    # two ranks with batch 3 together read the batches of one process with batch 6
    one = ResumableSampler(12, seed=1, batch_size=6)
    one.set_epoch(1)
    ranks = [ResumableSampler(12, seed=1, batch_size=3, rank=r, world_size=2) for r in (0, 1)]
    for r in ranks:
        r.set_epoch(1)
    a, b = (list(r) for r in ranks)
    merged = [x for k in range(2) for x in sorted(a[3 * k : 3 * k + 3] + b[3 * k : 3 * k + 3])]
    assert merged == [x for k in range(2) for x in sorted(list(one)[6 * k : 6 * k + 6])]


def test_batches_do_not_depend_on_worker_count(folder):
    """The order and the random crops come from (seed, epoch, index): 0 and 2 workers read the same batches."""
    from adaptertune.data import build_splits, load_raw
    from adaptertune.data.loaders import make_loader

    cfg = RunConfig.from_dict(config(folder, folder / "unused"))
    data_config = {"input_size": (3, 32, 32), "mean": (0.5,) * 3, "std": (0.5,) * 3, "crop_pct": 0.9}
    splits = build_splits(cfg.data, data_config, load_raw(cfg.data))
    batches = []
    for workers in (0, 2):
        loader = make_loader(splits.train, 8, workers, torch.device("cpu"), shuffle=True, seed=3)
        loader.sampler.set_epoch(2)
        batches.append([(x.clone(), y.clone()) for x, y, _ in loader])
    assert len(batches[0]) == len(batches[1]) == 4
    for (x0, y0), (x1, y1) in zip(*batches, strict=True):
        assert torch.equal(x0, x1) and torch.equal(y0, y1)


@pytest.mark.parametrize("stop_after", [2, 7])  # before the first checkpoint (step 3); after the step-6 one
def test_tensorboard_curves_continue_from_the_checkpoint(folder, reference, tmp_path, stop_after):
    """Stopped and resumed: one loss point per step, equal to the uninterrupted run's."""
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    def losses(run_dir: Path) -> list[tuple[int, float]]:
        acc = EventAccumulator(str(run_dir / "tensorboard"))
        acc.Reload()
        return [(e.step, e.value) for e in acc.Scalars("train/loss_step")]

    ref_out, out = tmp_path / "ref", tmp_path / "run"
    with _threads(THREADS):
        run(
            RunConfig.from_dict(
                config(folder, ref_out) | {"train": {**config(folder, ref_out)["train"], "tensorboard": True}}
            )
        )
        cfg = RunConfig.from_dict(
            config(folder, out) | {"train": {**config(folder, out)["train"], "tensorboard": True}}
        )
        with pytest.raises(StopAtStep):
            run(cfg, [_Stop(stop_after)])
        run(cfg, resume=True)
    assert losses(out) == losses(ref_out) and [s for s, _ in losses(out)] == list(range(1, 9))


def test_split_sampler_is_the_order_of_both_loaders():
    train = split_sampler(10, 3, shuffle=True, seed=1, rank=1, world_size=2)
    assert isinstance(train, ResumableSampler) and (train.seed, train.batch_size, train.rank) == (1, 3, 1)
    assert split_sampler(10, 3, shuffle=False) is None  # one process evaluates in dataset order
    shard = split_sampler(10, 3, shuffle=False, rank=1, world_size=4)
    assert isinstance(shard, ShardedEvalSampler) and list(shard) == [1, 5, 9]
