"""Run-folder locks (runs/lock.py): exclusion, stale-lock recovery after a killed holder, and two sweeps sharing a
results folder."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import yaml

from adaptertune.runs import lock as locks_module
from adaptertune.runs.lock import RunLock, lock_path_for, pid_alive
from adaptertune.sweeps import InProcessExecutor, SweepSpec, run_sweep
from helpers import TINY_VIT, make_image_folder

# runs/lock.py is loaded by path: the holder process starts in a fraction of a second (no torch import)
HOLDER = """
import importlib.util, os, signal, sys, time
spec = importlib.util.spec_from_file_location("locks", sys.argv[4])
locks = importlib.util.module_from_spec(spec)
spec.loader.exec_module(locks)
RunLock = locks.RunLock
lock = RunLock(sys.argv[1], soft=sys.argv[2] == "soft")
assert lock.acquire()
print("held", flush=True)
if sys.argv[3] == "kill":
    os.kill(os.getpid(), signal.SIGKILL)
time.sleep(60)
"""


def start_holder(path, kind, action):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(path), kind, action, locks_module.__file__],
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout.readline().strip() == "held"
    return proc


@pytest.mark.parametrize("soft", [False, True], ids=["os-lock", "lock-file"])
def test_lock_is_exclusive_and_released(tmp_path, soft):
    a, b = RunLock(tmp_path / "p.lock", soft=soft), RunLock(tmp_path / "p.lock", soft=soft)
    assert a.acquire() and a.held
    assert not b.acquire()
    assert b.owner()["pid"] == os.getpid()
    a.release()
    assert b.acquire()
    b.release()


@pytest.mark.parametrize("soft", [False, True], ids=["os-lock", "lock-file"])
def test_killed_holder_leaves_no_stale_lock(tmp_path, soft):
    path = tmp_path / "p.lock"
    proc = start_holder(path, "soft" if soft else "os", "kill")
    assert proc.wait(30) == -signal.SIGKILL
    assert RunLock(path, soft=soft).owner()["pid"] == proc.pid  # its record is still there...
    lock = RunLock(path, soft=soft)
    assert lock.acquire()  # ...but the lock is free: the holder is dead
    assert lock.owner()["pid"] == os.getpid()
    lock.release()


@pytest.mark.parametrize("soft", [False, True], ids=["os-lock", "lock-file"])
def test_live_holder_in_another_process_keeps_the_lock(tmp_path, soft):
    path = tmp_path / "p.lock"
    proc = start_holder(path, "soft" if soft else "os", "sleep")
    try:
        lock = RunLock(path, soft=soft)
        assert not lock.acquire()
        assert lock.owner()["pid"] == proc.pid and pid_alive(proc.pid)
    finally:
        proc.kill()
        proc.wait(30)
    assert lock.acquire()
    lock.release()


def test_soft_lock_from_another_host_is_stale_only_after_its_age(tmp_path):
    path = tmp_path / "p.lock"
    path.write_text(json.dumps({"pid": 1, "host": "elsewhere", "time": 0, "token": "x"}))
    assert not RunLock(path, soft=True).acquire()  # unknown host, no age limit: respected
    old = time.time() - 3600
    os.utime(path, (old, old))
    lock = RunLock(path, soft=True, stale_after=600)
    assert lock.acquire()
    lock.release()


def _spec(folder, n=3):
    base = {
        "backbone": TINY_VIT,
        "data": {"name": "imagefolder", "root": str(folder), "num_workers": 0},
        "method": "head",
        "train": {"epochs": 1, "batch_size": 16, "device": "cpu"},
    }
    return SweepSpec(name="locks", base=base, grid={"train.seed": list(range(n))})


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return make_image_folder(tmp_path_factory.mktemp("locks_data"), n_classes=2, n_train=4, n_test=2, size=36)


def test_sweep_skips_a_point_held_by_another_process(folder, tmp_path):
    spec = _spec(folder, n=2)
    held = RunLock(lock_path_for(tmp_path / "seed=1"))  # "another sweep" is running seed=1
    assert held.acquire()
    first = run_sweep(spec, tmp_path, InProcessExecutor())
    assert {r.name: r.status for r in first.results} == {"seed=0": "success", "seed=1": "skipped"}
    assert "running in another process" in next(r.error for r in first.results if r.status == "skipped")
    held.release()
    second = run_sweep(spec, tmp_path, InProcessExecutor())  # the re-run finishes only what is missing
    assert [(r.name, r.status) for r in second.results] == [("seed=1", "success")]


@pytest.mark.slow
def test_two_sweep_processes_run_each_point_once(folder, tmp_path):
    spec_file = tmp_path / "spec.yaml"
    s = _spec(folder, n=4)
    spec_file.write_text(yaml.safe_dump({"name": s.name, "base": s.base, "grid": s.grid}))
    results = tmp_path / "results"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    cmd = [sys.executable, "-m", "adaptertune", "sweep", str(spec_file), "--results-dir", str(results), "--quiet"]
    procs = [subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in "ab"]
    outs = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    ran = []
    for _out, err in outs:
        ran += [line.split()[3].rstrip(":") for line in err.splitlines() if " success " in line]
    assert sorted(ran) == [f"seed={i}" for i in range(4)], outs  # each point trained by exactly one process
    for i in range(4):
        assert json.loads((results / f"seed={i}" / "summary.json").read_text())["status"] == "success"
