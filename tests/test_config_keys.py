"""Dotted keys read off the dataclasses and the methods' options classes (no table to keep in sync)."""

import dataclasses

import pytest

from adaptertune.config import DataConfig, TrainConfig
from adaptertune.config_keys import (
    apply_overrides,
    apply_values,
    canonical_key,
    check_key,
    flatten_config,
    get_dotted,
    key_infos,
    parse_override,
    parse_value,
    set_dotted,
)
from adaptertune.errors import ConfigError


def test_every_dataclass_field_is_a_key():
    keys = set(key_infos())
    assert {f"train.{f.name}" for f in dataclasses.fields(TrainConfig)} <= keys
    assert {f"data.{f.name}" for f in dataclasses.fields(DataConfig)} <= keys
    assert {"method", "out_dir", "backbone.name", "adapter.rank", "adapter.targets"} <= keys  # targets: LoRA's


def test_aliases_and_spellings():
    assert canonical_key("lr") == "train.lr"
    assert canonical_key("batch-size") == "train.batch_size"
    assert canonical_key("targets") == "adapter.targets"
    assert canonical_key("backbone.args.img_size") == "backbone.args.img_size"
    assert canonical_key("vpt-deep.prompts") == "vpt-deep.prompts"  # a dash in a method's name stays
    assert canonical_key("adapter-plus.drop-path") == "adapter-plus.drop_path"
    with pytest.raises(ConfigError, match="Unknown config key 'name'"):  # backbone.name or data.name
        canonical_key("name")
    check_key("train.lr")
    with pytest.raises(ConfigError, match="Unknown config key 'lr' in the grid"):
        check_key("lr", " in the grid")


def test_get_set_apply():
    d = {"train": {"lr": 0.1}}
    set_dotted(d, "adapter.rank", 4)
    assert get_dotted(d, "adapter.rank") == 4 and get_dotted(d, "data.root", None) is None
    with pytest.raises(KeyError):
        get_dotted(d, "data.root")
    out = apply_values(d, {"lr": 0.5, "backbone.args.img_size": 32})
    assert out == {"train": {"lr": 0.5}, "adapter": {"rank": 4}, "backbone": {"args": {"img_size": 32}}}
    assert d["train"]["lr"] == 0.1  # the input is not modified
    assert apply_overrides({}, ["rank=8", "rank=2"]) == {"adapter": {"rank": 2}}  # later wins


def test_a_plugin_methods_option_is_a_key():
    from adaptertune.methods import Method, register_method, unregister_method

    @dataclasses.dataclass
    class Opts:
        """Args:
        gamma_scale: a made-up option."""

        gamma_scale: float = 1.0

    class Toy(Method):
        name, description, options = "toy-keys", "test", Opts

    before = key_infos()
    assert key_infos() is before  # read once, not per key
    with pytest.raises(ConfigError):
        canonical_key("gamma_scale")
    register_method(Toy())
    try:
        assert canonical_key("gamma_scale") == "adapter.gamma_scale"
        assert key_infos()["adapter.gamma_scale"].owner is Opts
        check_key("adapter.gamma_scale")
    finally:
        unregister_method("toy-keys")
    with pytest.raises(ConfigError):
        canonical_key("gamma_scale")
    assert key_infos() == before


def test_flatten_is_the_inverse_of_set_dotted():
    d = {"train": {"lr": 0.1, "epochs": 2}, "backbone": {"name": "x", "args": {"img_size": 32}}, "method": "head"}
    flat = flatten_config(d)
    assert flat == {
        "train.lr": 0.1,
        "train.epochs": 2,
        "backbone.name": "x",
        "backbone.args": {"img_size": 32},  # timm kwargs stay one value
        "method": "head",
    }
    back: dict = {}
    for key, value in flat.items():
        set_dotted(back, key, value)
    assert back == d


def test_values_are_read_as_yaml():
    assert [parse_value(v) for v in ("0.001", "8", "true", "none", "", "qkv+mlp", "[1, 2")] == [
        0.001,
        8,
        True,
        "none",
        None,
        "qkv+mlp",
        "[1, 2",  # not YAML: stays text
    ]
    assert parse_override("backbone.args.img_size=32") == ("backbone.args.img_size", 32)


@pytest.mark.parametrize(
    "typo, suggested",
    [
        ("train.learning_rate", "train.lr"),  # Hugging Face's name
        ("train.num_epochs", "train.epochs"),
        ("train.epoch", "train.epochs"),  # a near miss
        ("adapter.rnk", "adapter.rank"),
        ("weight_decy", "train.weight_decay"),  # no section given
    ],
)
def test_unknown_key_suggests_the_closest_valid_key(typo, suggested):
    with pytest.raises(ConfigError, match=rf"Unknown config key '{typo}'\. Did you mean `{suggested}`"):
        canonical_key(typo)


def test_unknown_key_without_a_close_key_lists_the_valid_ones_only():
    with pytest.raises(ConfigError) as e:
        canonical_key("foo.bar")
    assert "Did you mean" not in str(e.value) and "train.lr" in str(e.value)
