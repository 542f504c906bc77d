"""torchrun: 2 CPU processes (gloo) match 1 process with the same global batch; resume works the same way."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from adaptertune.engine import load_tensors
from adaptertune.engine.distributed import DistInfo, dist_info_from_env
from adaptertune.errors import ConfigError
from helpers import TINY_VIT_ARGS, make_image_folder

KILL_HELPER = Path(__file__).with_name("kill_train_helper.py")


def test_dist_info_from_env():
    assert dist_info_from_env({}) == DistInfo(0, 1, 0)
    info = dist_info_from_env({"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1"})
    assert info == DistInfo(3, 4, 1) and not info.is_main and info.enabled
    with pytest.raises(ConfigError, match="RANK=4, WORLD_SIZE=4"):
        dist_info_from_env({"RANK": "4", "WORLD_SIZE": "4"})
    with pytest.raises(ConfigError, match="WORLD_SIZE='two'"):
        dist_info_from_env({"RANK": "0", "WORLD_SIZE": "two"})


def _train(folder, out, nproc, *extra, resume=False, kill_at=None, expect=0):
    args = [*TINY_VIT_ARGS, "--data-root", str(folder), "--val-fraction", "0.25", "--epochs", "2"]
    args += ["--batch-size", "8", "--num-workers", "0", "--device", "cpu", "--seed", "1", "--rank", "4"]
    args += ["--quiet", "--out-dir", str(out), *extra]
    if resume:
        args = ["--quiet", "--resume", str(out)]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path), OMP_NUM_THREADS="1")
    # a killed job: the helper wraps the CLI with a callback that SIGKILLs the main process after step N
    entry = ["-m", "adaptertune", "train"] if kill_at is None else [str(KILL_HELPER), str(kill_at)]
    if nproc == 1:
        cmd = [sys.executable, *entry, *args]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}"]
        cmd += [*entry, *args]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert (proc.returncode == 0) == (expect == 0), proc.stderr[-3000:]
    return json.loads((out / "summary.json").read_text()) if expect == 0 else None


@pytest.mark.distributed
def test_two_cpu_processes_match_one_process(tmp_path):
    # 4 classes x 8 images, 25% val -> 24 train images: 3 global batches of 8 (4 per rank), no padding
    folder = make_image_folder(tmp_path / "data", n_classes=4, n_train=8, n_test=4, size=36)
    one = _train(folder, tmp_path / "one", 1)
    two = _train(folder, tmp_path / "two", 2)
    for key in ("test_acc", "test_acc_last", "best_val_acc", "best_epoch"):
        assert two[key] == pytest.approx(one[key], abs=1e-6), key
    m1, m2 = ([json.loads(line) for line in open(d / "metrics.jsonl")] for d in (tmp_path / "one", tmp_path / "two"))
    for a, b in zip(m1, m2, strict=True):
        assert b["train_loss"] == pytest.approx(a["train_loss"], rel=1e-4)
        assert b["val_loss"] == pytest.approx(a["val_loss"], rel=1e-4)
        assert b["train_acc"] == a["train_acc"] and b["val_acc"] == a["val_acc"]
    t1, _ = load_tensors(tmp_path / "one" / "adaptertune_weights.safetensors")
    t2, _ = load_tensors(tmp_path / "two" / "adaptertune_weights.safetensors")
    for k in t1:
        torch.testing.assert_close(t2[k], t1[k], rtol=1e-4, atol=1e-5)
    assert not (tmp_path / "two" / "checkpoint.safetensors").exists()


@pytest.mark.distributed
def test_two_process_run_killed_and_resumed(tmp_path):
    folder = make_image_folder(tmp_path / "data", n_classes=4, n_train=8, n_test=4, size=36)
    ref = _train(folder, tmp_path / "ref", 2, "checkpoint_every_steps=2")
    out = tmp_path / "run"
    # 3 steps per epoch, checkpoints after steps 2, 3, 4 (mid-epoch 2), 6: killed after step 5 -> resume at step 4
    _train(folder, out, 2, "checkpoint_every_steps=2", kill_at=5, expect=1)
    assert (out / "checkpoint.safetensors").is_file() and not (out / "summary.json").exists()
    got = _train(folder, out, 2, resume=True)
    for key in ("test_acc", "test_acc_last", "best_val_acc", "best_epoch"):
        assert got[key] == ref[key], key
    t1, _ = load_tensors(tmp_path / "ref" / "adaptertune_weights.safetensors")
    t2, _ = load_tensors(out / "adaptertune_weights.safetensors")
    for k in t1:
        assert torch.equal(t1[k], t2[k]), k


@pytest.mark.distributed
def test_rank_with_all_corrupt_batch_joins_the_others(tmp_path):
    """2 gloo processes; rank 1's second batch is all corrupt. Both finish (no hang in DDP's all-reduce), take
    the same optimizer steps, draw different dropout masks, keep per-rank RNG in the checkpoint and count the
    skipped images once (also after resuming)."""
    helper = Path(__file__).with_name("ddp_helper.py")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path), OMP_NUM_THREADS="1")
    store = tmp_path / "store"
    procs = [
        subprocess.Popen(
            [sys.executable, str(helper), str(r), "2", str(store), str(tmp_path)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for r in (0, 1)
    ]
    try:
        errs = [p.communicate(timeout=180)[1] for p in procs]
    finally:
        for p in procs:
            p.kill()
    assert [p.returncode for p in procs] == [0, 0], errs[0][-2000:] + errs[1][-2000:]
    r0, r1 = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1))
    assert r0["params"] == r1["params"]  # every rank stepped with the same averaged gradients
    assert r0["draw"] != r1["draw"]  # own dropout / drop-path stream per rank
    assert r0["skipped"] == r1["skipped"] == 4 and r0["skipped_resumed"] == r1["skipped_resumed"] == 4
    tensors, _ = load_tensors(tmp_path / "checkpoint.safetensors")
    assert not torch.equal(tensors["rng.rank0.torch_cpu"], tensors["rng.rank1.torch_cpu"])


def test_rank_seed_is_distinct_per_rank():
    from adaptertune.engine.distributed import rank_seed

    seeds = {rank_seed(s, r) for s in range(4) for r in range(8)}
    assert len(seeds) == 32 and rank_seed(7, 0) == 7
