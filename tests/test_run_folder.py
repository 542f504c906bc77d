"""The run folder (runs/folder.py and its neighbours in runs/): its states, torn metrics lines, failures in one schema,
the folder lock, --overwrite written aside, Ctrl-C recorded as interrupted, and the dataset identity in the
protocol."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from adaptertune.cli import main
from adaptertune.config import RunConfig
from adaptertune.errors import CheckpointError, ConfigError
from adaptertune.runs import ADAPTER_FILE, CHECKPOINT_FILE, FolderLockedError, RunStatus, RunSummary, read_state, run
from adaptertune.runs import folder as rf
from adaptertune.runs.folder import read_jsonl
from adaptertune.runs.lock import RunLock, lock_path_for
from adaptertune.runs.summary import CELL_FREE_KEYS, RESUME_FREE_KEYS, config_differences, make_protocol
from helpers import TINY_VIT, TINY_VIT_ARGS, make_image_folder


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    # 3 classes x 8 train images -> 22 train + 2 val; batch 8 -> 3 steps per epoch
    return make_image_folder(tmp_path_factory.mktemp("folder_data"), n_classes=3, n_train=8, n_test=2, size=36)


def config(folder: Path, out: Path, **train) -> RunConfig:
    return RunConfig.from_dict(
        {
            "backbone": TINY_VIT,
            "data": {"name": "imagefolder", "root": str(folder), "num_workers": 0},
            "method": "adapter",
            "adapter": {"rank": 2},
            "train": {"epochs": 1, "batch_size": 8, "device": "cpu", "checkpoint_every_steps": 1, **train},
            "out_dir": str(out),
        }
    )


class StopAt:
    """Raises ``error`` once ``n`` optimizer steps are done; ``check`` runs at every step."""

    def __init__(self, n: int, error: type[BaseException], check=None) -> None:
        self.n, self.error, self.check = n, error, check

    def on_train_start(self, total_steps, steps_per_epoch, start_step):
        pass

    def on_step(self, step, loss, lr):
        if self.check:
            self.check()
        if step + 1 == self.n:
            raise self.error("stop")

    def on_epoch_end(self, metrics):
        pass


@pytest.fixture(scope="module")
def finished(folder, tmp_path_factory):
    out = tmp_path_factory.mktemp("finished") / "run"
    run(config(folder, out))
    return out


# ---------------------------------------------------------------- states and the one summary schema
def test_states_of_hand_made_folders(tmp_path):
    assert read_state(tmp_path / "nothing").status is RunStatus.PENDING
    (tmp_path / "file").write_text("x")
    assert read_state(tmp_path / "file").status is RunStatus.CORRUPT
    d = tmp_path / "a"
    d.mkdir()
    (d / "config.yaml").write_text("method: head\n")
    s = read_state(d)
    assert (s.status, s.detail, s.resumable) == (RunStatus.INCOMPLETE, "no summary.json", True)
    (d / "summary.json").write_text(json.dumps({"status": "success", "method": "head"}))
    s = read_state(d)
    assert s.status is RunStatus.CORRUPT and s.detail.startswith("summary.json lacks dataset, backbone")
    (d / "summary.json").write_text(json.dumps({"status": "bogus"}))
    assert read_state(d).status is RunStatus.CORRUPT
    (d / "config.yaml").write_text("[unclosed\n")
    assert read_state(d).status is RunStatus.CORRUPT and "config.yaml" in read_state(d).detail


def test_a_failure_has_the_summary_schema_and_a_richer_one_is_kept(tmp_path):
    cfg = {"method": "adapter", "adapter": {"rank": 4}, "backbone": {"name": "b"}, "train": {"seed": 2}}
    rf.record_failure(tmp_path / "p", RunSummary.failure("RuntimeError: boom", cfg))
    saved = json.loads((tmp_path / "p" / "summary.json").read_text())
    assert set(saved) == set(RunSummary(RunStatus.FAILED).to_dict())
    assert (saved["status"], saved["method"], saved["rank"], saved["seed"]) == ("failed", "adapter", 4, 2)
    rf.record_failure(tmp_path / "p", RunSummary.failure("worker died", cfg), keep_existing=True)
    state = read_state(tmp_path / "p")
    assert state.status is RunStatus.FAILED and state.detail == "RuntimeError: boom"


def test_discard_attempt_never_deletes_foreign_files(tmp_path):
    d = tmp_path / "p"
    d.mkdir()
    (d / "config.yaml").write_text("x: 1\n")
    (d / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match=r"not a run's \(notes.txt\)"):
        rf.discard_attempt(d)
    (d / "notes.txt").unlink()
    rf.discard_attempt(d)
    assert not d.exists()


def test_one_list_of_keys_that_may_differ():
    assert RESUME_FREE_KEYS < CELL_FREE_KEYS and CELL_FREE_KEYS - RESUME_FREE_KEYS == {
        "train.seed",
        "data.cv_fold",
        "data.root",
        "data.subset_seed",  # data.subset_per_seed: each seed's own draw
    }
    a = {"train": {"seed": 0, "lr": 0.1, "device": "cpu"}, "backbone": {"args": {"img_size": 32}}}
    b = {"train": {"seed": 1, "lr": 0.1, "device": "cuda"}, "backbone": {"args": {"img_size": 64}}}
    assert config_differences(a, b, CELL_FREE_KEYS) == [("backbone.args", {"img_size": 32}, {"img_size": 64})]
    assert [k for k, *_ in config_differences(a, b, RESUME_FREE_KEYS)] == ["backbone.args", "train.seed"]


def test_protocol_names_the_data(folder, tmp_path, monkeypatch):
    monkeypatch.chdir(folder.parent)
    cfg = RunConfig.from_dict({"data": {"name": "imagefolder", "root": folder.name}, "out_dir": "x"})
    data_config = {"input_size": (3, 32, 32), "mean": (0.5,) * 3, "std": (0.5,) * 3}
    p = make_protocol(cfg, data_config, ["a", "b"], {"train": 20, "test": 4}, selection="best_val_top1")
    assert p["data_root"] == str(folder.resolve()) and p["dataset"] == "imagefolder"  # resolved, not as typed
    assert p["classes"] == ["a", "b"] and p["image_counts"] == {"train": 20, "test": 4}


def test_finished_run_records_its_data_and_drops_its_checkpoint(finished, folder):
    state = read_state(finished)
    assert state.status is RunStatus.SUCCESS and not state.resumable and state.checkpoint is None
    protocol = state.summary.protocol
    assert protocol["data_root"] == str(folder.resolve()) and protocol["classes"] == ["class_0", "class_1", "class_2"]
    assert protocol["image_counts"] == {"train": 24, "test": 6}


# ---------------------------------------------------------------- Ctrl-C
def test_keyboard_interrupt_is_recorded_as_interrupted_and_resumes(folder, tmp_path):
    out = tmp_path / "run"
    cfg = config(folder, out)
    with pytest.raises(KeyboardInterrupt):
        run(cfg, [StopAt(3, KeyboardInterrupt)])  # during step 3: the last checkpoint is step 2's
    state = read_state(out)
    assert state.status is RunStatus.INTERRUPTED and state.resumable and state.checkpoint == (1, 2)
    assert state.describe() == "resumable (epoch 1, step 2); KeyboardInterrupt: stopped by the user"
    assert run(cfg, resume=True).status is RunStatus.SUCCESS
    assert read_state(out).status is RunStatus.SUCCESS and not (out / CHECKPOINT_FILE).exists()


def test_cli_ctrl_c_prints_the_resume_command(folder, tmp_path, monkeypatch, capsys):
    from adaptertune.cli import progress

    def interrupt(self, step, loss, lr):
        if step + 1 == 3:
            raise KeyboardInterrupt

    monkeypatch.setattr(progress.TqdmProgress, "on_step", interrupt)
    out = tmp_path / "my run"
    args = ["train", *TINY_VIT_ARGS, "--data-root", str(folder), "--epochs", "1", "--batch-size", "8"]
    args += ["--num-workers", "0", "--rank", "2", "--quiet", "--out-dir", str(out), "checkpoint_every_steps=1"]
    assert main(args) == 130
    err = capsys.readouterr().err.strip()
    assert err == f"interrupted; continue from epoch 1, step 2 with: adaptertune train --resume '{out}'"


def test_sweep_dry_run_shows_the_resumable_point(folder, tmp_path, capsys):
    import yaml

    results = tmp_path / "results"
    base = config(folder, tmp_path / "unused").to_dict()
    del base["out_dir"]
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump({"name": "r", "base": base, "grid": {"train.seed": [0, 1]}}))
    with pytest.raises(KeyboardInterrupt):  # seed=0 stopped by Ctrl-C after 2 steps
        run(config(folder, results / "seed=0", seed=0), [StopAt(3, KeyboardInterrupt)])
    assert main(["sweep", str(spec), "--results-dir", str(results), "--dry-run"]) == 0
    out = capsys.readouterr().out
    row0 = next(line for line in out.splitlines() if "seed=0" in line)
    assert "interrupted" in row0 and "resumable (epoch 1, step 2)" in row0
    assert "pending" in next(line for line in out.splitlines() if "seed=1" in line)


# ---------------------------------------------------------------- the lock
def test_a_locked_folder_is_refused_and_left_alone(folder, tmp_path):
    out = tmp_path / "run"
    held = RunLock(lock_path_for(out))
    assert held.acquire()
    try:
        with pytest.raises(
            FolderLockedError, match=rf"'{out}' is being written by another process \(pid {os.getpid()}"
        ):
            run(config(folder, out))
        assert not out.exists()
        assert read_state(out).status is RunStatus.RUNNING
        assert read_state(out).describe().startswith(f"pid {os.getpid()} on ")
    finally:
        held.release()
    assert read_state(out).status is RunStatus.PENDING


@pytest.mark.slow
def test_two_train_processes_on_one_out_dir(folder, tmp_path):
    out = tmp_path / "run"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path), OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "adaptertune", "train", *TINY_VIT_ARGS, "--data-root", str(folder)]
    cmd += ["--epochs", "3", "--batch-size", "8", "--num-workers", "0", "--quiet", "--out-dir", str(out)]
    procs = [subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in "ab"]
    outs = [p.communicate(timeout=600) for p in procs]
    codes = sorted(p.returncode for p in procs)
    assert codes == [0, 2], outs
    err = next(e for p, (_, e) in zip(procs, outs, strict=True) if p.returncode == 2).strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: "), err
    assert "being written by another process" in err or "is not empty" in err, err
    assert read_state(out).status is RunStatus.SUCCESS
    assert len(rf.read_metrics(out)) == 3  # one run's epochs, not two runs' interleaved


# ---------------------------------------------------------------- --overwrite writes aside
def _files(run_dir: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(run_dir.iterdir()) if p.is_file()}


def test_failed_overwrite_leaves_the_earlier_run_intact(finished, folder, tmp_path):
    before = _files(finished)

    def unchanged():  # while the new run trains, the folder still holds the earlier run
        assert _files(finished) == before

    with pytest.raises(RuntimeError, match="stop"):
        run(config(folder, finished, seed=5), [StopAt(2, RuntimeError, unchanged)], overwrite=True)
    assert _files(finished) == before
    assert sorted(p.name for p in finished.parent.iterdir()) == [".run.lock", "run"]  # no staging left


def test_overwrite_swaps_in_the_new_run_when_it_has_finished(finished, folder, tmp_path):
    import shutil

    out = tmp_path / "run"
    shutil.copytree(finished, out)
    old = _files(out)
    seen = []
    run(
        config(folder, out, seed=5),
        [StopAt(-1, RuntimeError, lambda: seen.append(_files(out) == old))],
        overwrite=True,
    )
    assert seen and all(seen)
    assert read_state(out).summary.seed == 5 and _files(out)[ADAPTER_FILE] != old[ADAPTER_FILE]
    assert sorted(p.name for p in tmp_path.iterdir()) == [".run.lock", "run"]


def test_a_swap_cut_between_its_renames_is_finished_by_the_next_lock(finished, tmp_path):
    import shutil

    out = tmp_path / "run"
    shutil.copytree(finished, rf.staging_dir(out))  # the finished replacement
    (tmp_path / ".run.replaced").mkdir()  # the earlier run, renamed away; then the process died
    rf.lock_folder(out).release()
    assert read_state(out).status is RunStatus.SUCCESS
    assert sorted(p.name for p in tmp_path.iterdir()) == [".run.lock", "run"]


def test_overwrite_refuses_what_is_not_a_run(folder, tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("x")
    with pytest.raises(ConfigError, match="not a run folder; --overwrite only replaces runs"):
        run(config(folder, tmp_path / "mine"), overwrite=True)
    assert (tmp_path / "mine" / "notes.txt").read_text() == "x"


def test_checkpoint_progress_reads_only_the_header(tmp_path):
    import torch

    from adaptertune.engine import save_tensors
    from adaptertune.engine.checkpoint import CHECKPOINT_FORMAT

    path = tmp_path / CHECKPOINT_FILE
    for done, batch, step, expected in ((1, 2, 5, (2, 5)), (2, 0, 6, (2, 6))):  # mid-epoch 2; end of epoch 2
        state = {"epochs_done": done, "batch_in_epoch": batch, "step": step}
        save_tensors(path, {"model.w": torch.zeros(1)}, {"format": CHECKPOINT_FORMAT, "state": state})
        assert rf.checkpoint_progress(path) == expected
    path.write_bytes(b"junk")
    assert rf.checkpoint_progress(path) is None


def test_read_jsonl_drops_torn_last_line_only(tmp_path):
    p = tmp_path / "metrics.jsonl"
    p.write_text('{"epoch": 1}\n{"epoch": 2}\n{"epo')
    assert read_jsonl(p) == [{"epoch": 1}, {"epoch": 2}]
    p.write_text('{"epoch": 1}\n{"ep\n{"epoch": 3}\n')
    with pytest.raises(CheckpointError, match="line 2"):
        read_jsonl(p)
