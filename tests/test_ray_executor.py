"""The Ray executor (sweeps/ray_executor.py) against a local Ray instance the test starts (marker ray; needs `pip
install ray`)."""

import json
import os
import sys

import pytest

from adaptertune.runs import ADAPTER_FILE
from adaptertune.sweeps import SweepSpec, plan_sweep, run_sweep
from helpers import TINY_VIT, make_image_folder

pytestmark = pytest.mark.ray
ray = pytest.importorskip("ray")


@pytest.fixture(scope="module")
def local_ray():
    ray.init(
        num_cpus=2,
        num_gpus=0,
        include_dashboard=False,
        log_to_driver=False,
        runtime_env={"env_vars": {"PYTHONPATH": os.pathsep.join(sys.path), "HF_HUB_OFFLINE": "1"}},
    )
    yield
    ray.shutdown()


def _spec(folder):
    base = {
        "backbone": TINY_VIT,
        "data": {"name": "imagefolder", "root": str(folder), "num_workers": 0},
        "method": "head",
        "train": {"epochs": 2, "batch_size": 8, "device": "cpu", "checkpoint_every_steps": 1},
    }
    return SweepSpec(name="ray", base=base, grid={"train.seed": [0, 1]})


def test_ray_sweep_runs_points_skips_done_and_reruns_killed_worker(local_ray, tmp_path):
    from adaptertune.sweeps.ray_executor import RayExecutor

    folder = make_image_folder(tmp_path / "data", n_classes=2, n_train=6, n_test=2, size=36)
    spec, results = _spec(folder), tmp_path / "results"
    marker = tmp_path / "killed-once"

    def dies_once(job):  # the first attempt at seed=1 kills its worker process after a checkpoint exists
        from adaptertune.sweeps import run_point

        if job.name == "seed=1" and not marker.exists():
            marker.touch()

            class Die:
                def on_train_start(self, *a):
                    pass

                def on_step(self, step, loss, lr):
                    if step == 2:
                        os._exit(1)

                def on_epoch_end(self, m):
                    pass

            return run_point(job, [Die()])
        return run_point(job)

    first = run_sweep(spec, results, RayExecutor(point_fn=dies_once, max_retries=2))
    assert [(r.name, r.status) for r in first.results] == [("seed=0", "success"), ("seed=1", "success")]
    assert marker.exists()  # the worker of seed=1 died once; Ray's retry resumed the point
    for name in ("seed=0", "seed=1"):
        run_dir = results / name
        assert json.loads((run_dir / "summary.json").read_text())["status"] == "success"
        assert {"config.yaml", "metrics.jsonl", ADAPTER_FILE} <= {p.name for p in run_dir.iterdir()}
    assert all(p.state.value == "done" for p in plan_sweep(spec, results))
    again = run_sweep(spec, results, RayExecutor())
    assert again.results == []  # skip-completed: nothing submitted
