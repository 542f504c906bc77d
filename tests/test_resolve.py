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
    assert r.method_options.rank == 2 and r.method_options.init == "zero"  # its options class, defaults filled
    assert resolve_run(run_config(tmp_path, "x", **ADAPTER_RUN, device="cpu", precision="bf16")).precision == "bf16"


def test_the_resolved_run_carries_every_decided_value(run_config, tmp_path):
    rr = resolve_run(run_config(tmp_path, tmp_path / "x", **ADAPTER_RUN, device="cpu"))
    assert rr.method.name == "adapter" and rr.options is rr.config.method_options and rr.options.rank == 2
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


# ---------------------------------------------------------------- per-method options sections (issue 24)
def _resolved(d):
    return resolve_config(RunConfig.from_dict(d))


def test_each_method_reads_its_own_section_and_records_it_alone():
    d = {"method": "lora", "lora": {"rank": 4, "targets": "qkv+mlp"}, "parallel": {"rank": 3}}
    cfg = _resolved(d)
    assert (cfg.method_options.rank, cfg.method_options.targets) == (4, "qkv+mlp")
    out = cfg.to_dict()  # config.yaml: the selected method's section, under its name, nothing else
    assert out["lora"]["rank"] == 4 and "adapter" not in out and "parallel" not in out
    assert list(out)[:4] == ["backbone", "data", "method", "lora"]
    assert _resolved(out).to_dict() == out  # a config.yaml resolves to itself
    assert _resolved({"method": "parallel", "lora": {"rank": 4}, "parallel": {"rank": 3}}).method_options.rank == 3
    assert "head" not in _resolved({"method": "head", "lora": {"rank": 4}}).to_dict()  # others: checked, unused


def test_legacy_adapter_section_is_the_selected_methods_options():
    assert _resolved({"method": "lora", "adapter": {"rank": 4}}).method_options.rank == 4
    same = _resolved({"method": "lora", "adapter": {"rank": 4}, "lora": {"rank": 4, "alpha": 2.0}})
    assert (same.method_options.rank, same.method_options.alpha) == (4, 2.0)
    with pytest.raises(ConfigError, match=r"`adapter.rank`=8 and `lora.rank`=4 disagree for method 'lora'") as e:
        _resolved({"method": "lora", "adapter": {"rank": 8}, "lora": {"rank": 4}})
    assert "\n" not in str(e.value)


def test_sections_of_other_methods_are_checked_against_their_own_class():
    with pytest.raises(ConfigError, match=r"Unknown option `parallel.targets` of method 'parallel'"):
        _resolved({"method": "lora", "parallel": {"targets": "qkv"}})
    with pytest.raises(ConfigError, match=r"Did you mean `lora.rank`"):
        _resolved({"method": "adapter", "lora": {"rnk": 4}})
    with pytest.raises(ConfigError, match=r"Unknown config key 'trian'.*Did you mean `train`"):
        _resolved({"method": "lora", "trian": {"epochs": 1}})
    with pytest.raises(ConfigError, match=r"Unknown config key 'epochs'"):
        RunConfig.from_dict({"epochs": 3})  # not a mapping: not a section


def test_each_method_keeps_its_own_defaults(plugin_methods):
    """Two methods may give one option name different defaults (prompt dropout 0.1 beside adapter dropout 0)."""
    a = _resolved({"method": "toy_vpt"}).method_options
    b = _resolved({"method": "adapter"}).method_options
    assert (a.dropout, b.dropout) == (0.1, 0.0)
    assert _resolved({"method": "toy_vpt", "toy_vpt": {"prompts": 5}}).method_options.prompts == 5
    assert _resolved({"method": "toy_vpt", "adapter": {"prompts": 5}}).method_options.prompts == 5  # legacy
    from adaptertune.config_keys import apply_overrides

    d = apply_overrides({"method": "toy_vpt"}, ["toy_vpt.prompts=7", "adapter.dropout=0.2"])
    assert d == {"method": "toy_vpt", "toy_vpt": {"prompts": 7}, "adapter": {"dropout": 0.2}}
    opts = _resolved(d).method_options
    assert (opts.prompts, opts.dropout) == (7, 0.2)


@pytest.fixture
def plugin_methods():
    """A method with a `dropout` default of 0.1 (the adapter's is 0.0) and an option no other method has."""
    import dataclasses as dc

    from adaptertune.methods import Method, register_method, unregister_method

    @dc.dataclass
    class ToyVptOptions:
        """Args:
        prompts: prompt tokens.
        dropout: prompt dropout.
        """

        prompts: int = 10
        dropout: float = 0.1

    class ToyVpt(Method):
        name, description, options = "toy_vpt", "test", ToyVptOptions

    register_method(ToyVpt())
    yield
    unregister_method("toy_vpt")
