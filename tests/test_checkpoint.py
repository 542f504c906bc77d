"""The training checkpoint (engine/checkpoint.py, engine/state.py): its format, the last good one kept through a
non-finite loss or a full disk, the precision a resume must keep, each rank's RNG state."""

import json

import pytest
import torch

from adaptertune.cli import main
from adaptertune.config import RunConfig
from adaptertune.engine import TrainState, load_checkpoint, save_tensors
from adaptertune.engine import backward as step_module  # computes the training loss
from adaptertune.errors import CheckpointError, NonFiniteLossError, OutputError
from adaptertune.runs import ADAPTER_FILE, CHECKPOINT_FILE, run
from helpers import TINY_VIT, TINY_VIT_ARGS, make_image_folder, no_space_left


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return make_image_folder(tmp_path_factory.mktemp("ckpt_data"), n_classes=4, n_train=8, n_test=2, size=36)


def config(folder, out, **train):
    return RunConfig.from_dict(
        {
            "backbone": TINY_VIT,
            "data": {"name": "imagefolder", "root": str(folder), "num_workers": 0},
            "method": "adapter",
            "adapter": {"rank": 4},
            "train": {"epochs": 2, "batch_size": 8, "seed": 0, "device": "cpu", **train},
            "out_dir": str(out),
        }
    )


def test_checkpoint_loader_rejects_adapter_and_truncated_files(tmp_path):
    save_tensors(tmp_path / "a.safetensors", {"w": torch.zeros(2)}, {"backbone": "x"})
    with pytest.raises(CheckpointError, match="not an adaptertune training checkpoint"):
        load_checkpoint(tmp_path / "a.safetensors")
    (tmp_path / "t.safetensors").write_bytes((tmp_path / "a.safetensors").read_bytes()[:40])
    with pytest.raises(CheckpointError, match="truncated"):
        load_checkpoint(tmp_path / "t.safetensors")


class _NaNAtStep:
    """Stands in for torch.nn.functional in the training step: the loss of step ``n`` becomes NaN."""

    def __init__(self, n: int) -> None:
        self.n, self.calls = n, 0

    def __getattr__(self, name):
        return getattr(torch.nn.functional, name)

    def cross_entropy(self, logits, y, **kw):
        loss = torch.nn.functional.cross_entropy(logits, y, **kw)
        if kw.get("reduction", "mean") == "mean":  # training calls only (evaluate sums)
            self.calls += 1
            if self.calls == self.n + 1:
                return loss * float("nan")
        return loss


def test_non_finite_loss_stops_naming_the_step_and_keeps_checkpoint(folder, tmp_path, monkeypatch):
    out = tmp_path / "run"
    monkeypatch.setattr(step_module, "F", _NaNAtStep(2))
    with pytest.raises(NonFiniteLossError, match=r"Loss became nan at step 2 \(epoch 1\)"):
        run(config(folder, out, epochs=1, checkpoint_every_steps=1))
    _, meta = load_checkpoint(out / CHECKPOINT_FILE)  # the last good checkpoint (after step 2), intact
    assert meta["state"]["step"] == 2 and meta["state"]["batch_in_epoch"] == 2
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "failed" and "step 2" in summary["error"]


def test_non_finite_loss_cli_message(folder, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(step_module, "F", _NaNAtStep(0))
    args = ["train", *TINY_VIT_ARGS, "--data-root", str(folder), "--epochs", "1"]
    args += ["--batch-size", "8", "--num-workers", "0", "--quiet", "--out-dir", str(tmp_path / "run")]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: Loss became nan at step 0") and "\n" not in err


def test_full_disk_is_a_clear_error_and_keeps_checkpoint(folder, tmp_path, monkeypatch):
    out = tmp_path / "run"
    from adaptertune import atomic

    real = atomic.os.replace

    def replace(src, dst):
        if str(dst).endswith(ADAPTER_FILE):
            no_space_left()
        real(src, dst)

    monkeypatch.setattr(atomic.os, "replace", replace)
    with pytest.raises(OutputError, match=f"Cannot write '.*{ADAPTER_FILE}': No space left on device"):
        run(config(folder, out, epochs=1))
    monkeypatch.setattr(atomic.os, "replace", real)
    _, meta = load_checkpoint(out / CHECKPOINT_FILE)  # resumable: training itself had finished
    assert meta["state"]["epochs_done"] == 1
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["config.yaml", "metrics.jsonl", "summary.json", CHECKPOINT_FILE]
    )
    run(config(folder, out, epochs=1), resume=True)  # space freed: resume only writes the results
    assert json.loads((out / "summary.json").read_text())["status"] == "success"


def test_resume_in_another_precision_is_refused(folder, tmp_path, monkeypatch, capsys):
    """The precision changes the numbers: it is part of what a resumed run must keep."""
    out = tmp_path / "run"
    monkeypatch.setattr(step_module, "F", _NaNAtStep(3))
    with pytest.raises(NonFiniteLossError):
        run(config(folder, out, epochs=1, checkpoint_every_steps=1, precision="fp32"))
    monkeypatch.undo()
    assert main(["train", "--resume", str(out), "--precision", "bf16", "--quiet"]) == 2
    assert "`train.precision` is 'bf16' here but 'fp32' in the run" in capsys.readouterr().err


def test_each_rank_restores_its_own_rng_state(tmp_path):
    from adaptertune.engine.checkpoint import rank_rng_state, restore_training_state, save_checkpoint

    model = torch.nn.Linear(2, 2)
    opt = torch.optim.AdamW(model.parameters())
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    states = []
    for seed in (5, 6):
        torch.manual_seed(seed)
        states.append(rank_rng_state()["torch_cpu"])
    rank_rng = {f"rng.rank{r}.torch_cpu": s for r, s in enumerate(states)}
    save_checkpoint(tmp_path / "c.safetensors", model, opt, scaler, TrainState(1, "fp32", 0.1), rank_rng)
    tensors, meta = load_checkpoint(tmp_path / "c.safetensors")
    for r in (1, 0):
        torch.manual_seed(99)
        restore_training_state(tensors, meta, model, opt, scaler, "c", rank=r)
        assert torch.equal(torch.get_rng_state(), states[r])


def test_train_state_round_trips_and_refuses_another_versions_state():
    state = TrainState(4, "bf16", 0.01, epochs_done=2, best_val=55.0, history=[{"epoch": 1}], best_state={})
    meta = json.loads(json.dumps(state.to_meta()))  # as a checkpoint stores it
    assert TrainState.from_meta(meta, {}, "c") == state
    with pytest.raises(CheckpointError, match=r"c: the loop state lacks stale_epochs \(written by another"):
        TrainState.from_meta({k: v for k, v in meta.items() if k != "stale_epochs"}, {}, "c")
    with pytest.raises(CheckpointError, match="has unknown swa_state"):
        TrainState.from_meta({**meta, "swa_state": 1}, {}, "c")
    with pytest.raises(CheckpointError, match="written with 4 steps per epoch, this run has 5"):
        state.check_fits("c", 5, "bf16")
    with pytest.raises(CheckpointError, match="trained in bf16, this run would continue in fp32"):
        state.check_fits("c", 4, "fp32")
