"""benchmarks/gpu_check.sh --device cpu --smoke: the GPU check's steps, tiny, on the CPU (marker gpu: it runs with
the GPU check, ``pytest -m gpu``, not in the default suite)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).parents[1] / "benchmarks" / "gpu_check.sh"


@pytest.mark.gpu
def test_gpu_check_smoke_on_cpu(tmp_path):
    env = dict(os.environ, PYTHON=sys.executable, PYTHONPATH=os.pathsep.join(sys.path), HF_HUB_OFFLINE="1")
    proc = subprocess.run(
        ["bash", str(SCRIPT), "--device", "cpu", "--smoke", "--out", str(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    log = (tmp_path / "gpu_check.log").read_text()
    assert "all checks passed" in log and "FAIL" not in log
    for figure in ("host syncs:", "data/model =", "matmul 1024 x 1", "ok ddp world size 1 (gloo)"):
        assert figure in log, figure
    methods = subprocess.run(
        [sys.executable, str(SCRIPT.with_name("gpu_check_steps.py")), "methods"],
        env=env,
        capture_output=True,
        text=True,
    ).stdout.split()
    assert len(methods) >= 7 and all(f"ok {m} " in log for m in methods)
