"""Defaults are filled once (resolve.py) and config.yaml is exactly the config that ran."""

import json

import yaml

from adaptertune.config import RunConfig
from adaptertune.resolve import resolve_config, resolve_run_config
from adaptertune.runs import run

TINY_ARGS = {"img_size": 32, "patch_size": 4}


def _cfg(root, out, **train):
    return RunConfig.from_dict(
        {
            "backbone": {
                "name": "vit_tiny_patch16_224",
                "pretrained": False,
                "args": {"img_size": 32, "patch_size": 4},
            },
            "data": {"name": "imagefolder", "root": str(root), "num_workers": 0},
            "method": "adapter",
            "adapter": {"rank": 2},
            "train": {"epochs": 1, "batch_size": 32, **train},
            "out_dir": str(out),
        }
    )


def test_resolving_leaves_no_default_open_and_is_idempotent(tmp_path):
    cfg = _cfg(tmp_path, tmp_path / "x")  # lr, weight_decay, warmup_epochs None; device, precision auto
    r = resolve_run_config(cfg)
    t = r.train
    assert None not in (t.lr, t.weight_decay, t.warmup_epochs)
    assert t.device in ("cpu", "cuda") and t.precision in ("fp32", "bf16", "fp16")
    assert resolve_run_config(r).to_dict() == r.to_dict() == resolve_config(r).to_dict()
    assert r.adapter.rank == 2 and r.adapter.init == "zero"  # the method's options class, defaults filled
    assert resolve_run_config(_cfg(tmp_path, "x", device="cpu", precision="bf16")).train.precision == "bf16"


def test_config_yaml_is_the_config_that_ran(image_folder, tmp_path):
    cfg = _cfg(image_folder, tmp_path / "a")
    run(cfg)
    saved = yaml.safe_load((tmp_path / "a" / "config.yaml").read_text())
    assert saved == resolve_run_config(cfg).to_dict()
    assert "auto" not in (saved["train"]["device"], saved["train"]["precision"])
    # a run from the reloaded file resolves to the same config and trains to the same numbers
    reloaded = RunConfig.from_dict({**saved, "out_dir": str(tmp_path / "b")})
    assert resolve_run_config(reloaded).to_dict() == reloaded.to_dict()
    run(reloaded)
    again = yaml.safe_load((tmp_path / "b" / "config.yaml").read_text())
    assert {**again, "out_dir": None} == {**saved, "out_dir": None}
    a, b = (json.loads((tmp_path / n / "summary.json").read_text()) for n in "ab")
    assert (a["test_acc"], a["best_val_acc"]) == (b["test_acc"], b["best_val_acc"])
