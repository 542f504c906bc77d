"""Values are decided once (resolve.py): config.yaml is exactly the config that ran, and the selection rule the
run records is the one it trained with."""

import json

import pytest
import torch
import yaml

from adaptertune.config import RunConfig, TrainConfig
from adaptertune.engine import Selection, fit
from adaptertune.errors import ConfigError
from adaptertune.resolve import resolve_config, resolve_run, resolve_train_config
from adaptertune.runs import run

ADAPTER_RUN = {"adapter": {"rank": 2}, "epochs": 1, "batch_size": 32}  # run_config: rank-2 adapters, 1 epoch


def test_resolving_leaves_no_default_open_and_is_idempotent(run_config, tmp_path):
    cfg = run_config(
        tmp_path, tmp_path / "x", **ADAPTER_RUN
    )  # lr, weight_decay, warmup_epochs None; device, precision auto
    r = resolve_run(cfg).config
    t = r.train
    assert None not in (t.lr, t.weight_decay, t.warmup_epochs)
    assert t.device in ("cpu", "cuda") and t.precision in ("fp32", "bf16", "fp16")
    assert resolve_run(r).config.to_dict() == r.to_dict() == resolve_config(r).to_dict()
    assert r.adapter.rank == 2 and r.adapter.init == "zero"  # the method's options class, defaults filled
    assert resolve_run(run_config(tmp_path, "x", **ADAPTER_RUN, device="cpu", precision="bf16")).precision == "bf16"


def test_the_resolved_run_carries_every_decided_value(run_config, tmp_path):
    rr = resolve_run(run_config(tmp_path, tmp_path / "x", **ADAPTER_RUN, device="cpu"))
    assert rr.method.name == "adapter" and rr.options is rr.config.adapter and rr.options.rank == 2
    assert (rr.device, rr.precision, rr.warmup_epochs) == (torch.device("cpu"), "fp32", 0.1)
    assert rr.selection is None and rr.config.data.batched == "auto"  # both decided by the data
    bound = rr.with_data(has_val=False, batched="off")
    assert (bound.selection, bound.config.data.batched) == (Selection.LAST_EPOCH, "off")
    assert rr.with_data(has_val=True, batched="on").selection == Selection.BEST_VAL
    with pytest.raises(ConfigError, match="`train.early_stop` 2 needs a validation split"):
        resolve_run(run_config(tmp_path, "x", **ADAPTER_RUN, device="cpu", early_stop=2)).with_data(
            has_val=False, batched="off"
        )
    # a bound config resolves to itself: a run from its config.yaml trains the same
    again = resolve_run(bound.config)
    assert again.config.to_dict() == bound.config.to_dict()


def test_fit_takes_a_resolved_train_config_only():
    model = torch.nn.Linear(4, 2)
    data = [(torch.randn(2, 4), torch.tensor([0, 1]), 0)]
    raw = TrainConfig(epochs=1, batch_size=2, lr=0.1, weight_decay=0.0, device="cpu")
    with pytest.raises(ConfigError, match=r"`train.warmup_epochs` is None, `train.precision` is 'auto'") as e:
        fit(model, data, None, data, raw, torch.device("cpu"), selection=Selection.LAST_EPOCH)
    assert "\n" not in str(e.value) and "resolve_train_config" in str(e.value)
    cfg = resolve_train_config(raw)
    assert (cfg.warmup_epochs, cfg.precision, cfg.device) == (0.1, "fp32", "cpu")
    with pytest.raises(ConfigError, match="'best_val_top1' needs a validation split"):
        fit(model, data, None, data, cfg, torch.device("cpu"), selection=Selection.BEST_VAL)
    with pytest.raises(ConfigError, match="'last_epoch' ignores the validation split"):
        fit(model, data, data, data, cfg, torch.device("cpu"), selection=Selection.LAST_EPOCH)
    assert fit(model, data, None, data, cfg, torch.device("cpu"), selection="last_epoch").selection == "last_epoch"


def test_config_yaml_is_the_config_that_ran(run_config, image_folder, tmp_path):
    cfg = run_config(image_folder, tmp_path / "a", **ADAPTER_RUN)
    run(cfg)
    saved = yaml.safe_load((tmp_path / "a" / "config.yaml").read_text())
    # data.batched is decided from the data: image files go through PIL per image
    assert saved == {**resolve_run(cfg).config.to_dict(), "data": {**saved["data"], "batched": "off"}}
    assert saved["data"]["batched"] == "off"
    assert "auto" not in (saved["train"]["device"], saved["train"]["precision"], saved["data"]["batched"])
    # a run from the reloaded file resolves to the same config and trains to the same numbers
    reloaded = RunConfig.from_dict({**saved, "out_dir": str(tmp_path / "b")})
    assert resolve_run(reloaded).config.to_dict() == reloaded.to_dict()
    run(reloaded)
    again = yaml.safe_load((tmp_path / "b" / "config.yaml").read_text())
    assert {**again, "out_dir": None} == {**saved, "out_dir": None}
    a, b = (json.loads((tmp_path / n / "summary.json").read_text()) for n in "ab")
    assert (a["test_acc"], a["best_val_acc"]) == (b["test_acc"], b["best_val_acc"])


def test_official_val_split_with_val_fraction_0_records_the_rule_it_selected_with(run_config, image_folder, tmp_path):
    # a CSV dataset with its own val rows: validation is the official split, whatever data.val_fraction says
    def split(p):  # images 0-2 of each training class are the official val split
        return "val" if p.parent.parent.name == "train" and int(p.stem) < 3 else p.parent.parent.name

    rows = [
        f"{p.relative_to(image_folder)},{p.parent.name},{split(p)}" for p in sorted(image_folder.glob("*/*/*.png"))
    ]
    (image_folder / "official_val.csv").write_text("\n".join(rows) + "\n")
    data = {"name": "csv", "root": str(image_folder / "official_val.csv"), "val_fraction": 0.0}
    summary = run(run_config(image_folder, tmp_path / "run", **{**ADAPTER_RUN, "epochs": 2}, data=data, device="cpu"))
    saved = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert saved["split_sizes"]["val"] == 12 and saved["best_val_acc"] is not None
    assert saved["selection"] == saved["protocol"]["selection"] == "best_val_top1"
    assert summary.protocol["selection"] == summary.selection == "best_val_top1"
