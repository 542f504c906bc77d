import pytest

from adaptertune import AdapterConfig, ConfigError, RunConfig, TrainConfig
from adaptertune.config_checks import parse_placement
from adaptertune.config_keys import apply_overrides


@pytest.mark.parametrize(
    "spec,depth,expected",
    [
        ("all", 4, [0, 1, 2, 3]),
        ("every:2", 5, [0, 2, 4]),
        ("first:2", 12, [0, 1]),
        ("last:3", 12, [9, 10, 11]),
        ([0, -1], 12, [0, 11]),
        ("0, 5,11", 12, [0, 5, 11]),
        ("[3]", 12, [3]),
    ],
)
def test_parse_placement(spec, depth, expected):
    assert parse_placement(spec, depth) == expected


@pytest.mark.parametrize(
    "spec,match",
    [
        ("middle", "Unknown placement 'middle'"),
        ("every:0", "positive integer"),
        ("last:13", "only 12 blocks"),
        ([12], "out of range"),
        ([1, 1], "twice"),
    ],
)
def test_bad_placement(spec, match):
    with pytest.raises(ConfigError, match=match):
        parse_placement(spec, 12)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(rank=0), "adapter.rank.*>= 1, got 0"),
        (dict(rank=-3), "adapter.rank"),
        (dict(rank=2.5), "integer, got 2.5"),
        (dict(rank="abc"), "integer, got 'abc'"),
        (dict(alpha=float("nan")), "finite"),
        (dict(alpha=-1), "adapter.alpha.*>= 0"),
        (dict(init="ones"), "zero, small, random; got 'ones'"),
        (dict(dropout=1.0), "dropout"),
        (dict(placement="sideways"), "Unknown placement"),
    ],
)
def test_adapter_config_validation(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        AdapterConfig(**kwargs)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(lr=0), "train.lr.*> 0"),
        (dict(lr="fast"), "number"),
        (dict(epochs=0), "train.epochs"),
        (dict(precision="fp8"), "fp32, bf16, fp16"),
        (dict(device="tpu"), "cpu, cuda"),
    ],
)
def test_train_config_validation(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        TrainConfig(**kwargs)


def test_strings_from_cli_are_coerced():
    c = AdapterConfig(rank="16", alpha="0.5")
    assert c.rank == 16 and c.alpha == 0.5
    assert TrainConfig(lr="1e-3").lr == 1e-3


def test_round_trip_and_unknown_keys():
    cfg = RunConfig.from_dict({"method": "adapter", "adapter": {"rank": 4}, "train": {"lr": 0.01}})
    assert RunConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ConfigError, match="Unknown config key 'optimizer'. Valid top-level keys: backbone"):
        RunConfig.from_dict({"optimizer": "sgd"})
    with pytest.raises(ConfigError, match="Unknown config key 'train.lrr'. Valid keys of `train`: epochs"):
        RunConfig.from_dict({"train": {"lrr": 1}})


def test_overrides():
    d = apply_overrides({}, ["lr=0.01", "adapter.rank=8", "backbone.args.img_size=32", "placement=last:2"])
    assert d == {
        "train": {"lr": 0.01},
        "adapter": {"rank": 8, "placement": "last:2"},
        "backbone": {"args": {"img_size": 32}},
    }
    with pytest.raises(ConfigError, match=r"Unknown config key 'learning_rate'\. Did you mean `train.lr`\?"):
        apply_overrides({}, ["learning_rate=1"])
    with pytest.raises(ConfigError, match="key=value"):
        apply_overrides({}, ["lr"])


def test_train_compile_flag_is_validated():
    from adaptertune.config import TrainConfig

    assert TrainConfig().compile is False
    assert TrainConfig(compile="true").compile is True
    with pytest.raises(ConfigError, match="train.compile"):
        TrainConfig(compile="maybe")
