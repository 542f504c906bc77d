"""Flags generated from the config dataclasses: typed, documented once, the same on every command."""

import argparse
import sys

import pytest
import yaml

from adaptertune.cli import build_parser, main
from adaptertune.cli.flags import GROUPS, add_config_flags, config_dict, field_help
from adaptertune.cli.main import COMMANDS
from adaptertune.config_keys import is_method_key, key_infos


def _parsers(parser):
    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                yield from _parsers(sub)


def test_no_abbreviations_anywhere():
    parsers = list(_parsers(build_parser()))
    assert len(parsers) > 10 and all(not p.allow_abbrev for p in parsers)
    with pytest.raises(SystemExit) as e:
        build_parser().parse_args(["toy", "--seed", "0"])  # --seeds exists; --seed must not be read as it
    assert e.value.code == 2


def _parse(*argv):
    p = argparse.ArgumentParser()
    add_config_flags(p)
    return p.parse_args(list(argv))


def test_every_config_key_is_a_documented_flag():
    p = argparse.ArgumentParser()
    add_config_flags(p)
    dests = {a.dest: a for a in p._actions}
    for key, info in key_infos().items():
        assert (f"cfg:{key}" in dests) != is_method_key(key), key  # `lora.rank`: --set only (the flag is --rank)
        text = field_help(info.owner).get(info.leaf)
        assert text, f"{info.owner.__name__}.{info.leaf} has no entry in its docstring's Args"
    assert {g for g in GROUPS} == {"backbone", "data", "method", "training", "output"}


def test_flags_are_typed_and_set_as_values():
    args = _parse("--lr", "0.01", "--epochs", "3", "--no-augment", "--subset", "none", "--targets", "qkv+mlp")
    d = config_dict(args)
    assert d == {
        "train": {"lr": 0.01, "epochs": 3},
        "data": {"augment": False, "subset": None},
        "adapter": {"targets": "qkv+mlp"},  # LoRA's option, from its options class
    }
    assert type(d["train"]["epochs"]) is int
    d = config_dict(_parse("--placement", "0,5", "--backbone-arg", "img_size=32", "--no-pretrained"))
    assert d == {"adapter": {"placement": "0,5"}, "backbone": {"args": {"img_size": 32}, "pretrained": False}}


def test_backbone_arg_is_read_once_into_a_typed_value(tmp_path, capsys):
    f = tmp_path / "c.yaml"
    f.write_text(yaml.safe_dump({"backbone": {"args": {"patch_size": 4, "img_size": 224}}}))
    argv = ["--config", str(f), "--backbone-arg", "img_size=32", "--backbone-arg", "drop_rate=0.1"]
    args = _parse(*argv, "--backbone-arg", "global_pool=token", "--backbone-arg", "class_token=false")
    assert args.__dict__["cfg:backbone.args"] == [
        ("img_size", 32),
        ("drop_rate", 0.1),
        ("global_pool", "token"),
        ("class_token", False),
    ]
    args_d = config_dict(args)["backbone"]["args"]
    assert args_d == {"patch_size": 4, "img_size": 32, "drop_rate": 0.1, "global_pool": "token", "class_token": False}
    with pytest.raises(SystemExit) as e:
        _parse("--backbone-arg", "img_size")
    assert e.value.code == 2 and "'img_size' must look like NAME=VALUE" in capsys.readouterr().err


def test_only_the_command_run_gets_its_arguments(capsys):
    subs = build_parser(["eval"])._subparsers._group_actions[0].choices
    assert list(subs) == list(COMMANDS)
    assert {"run_dir", "device", "json"} <= {a.dest for a in subs["eval"]._actions}
    assert [a.dest for a in subs["train"]._actions] == ["help"]  # name and help line only
    assert main(["--debug", "list", "methods"]) == 0  # the command is the first word that is not an option
    assert "linear-probe-cached" in capsys.readouterr().out


def test_precedence_defaults_config_flags_set(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text(yaml.safe_dump({"train": {"lr": 0.1, "epochs": 7}, "data": {"num_workers": 0}}))
    args = _parse("--config", str(f), "--lr", "0.2", "--set", "train.epochs=9")
    d = config_dict(args, defaults={"train": {"lr": 1.0, "seed": 3}})
    assert d["train"] == {"lr": 0.2, "epochs": 9, "seed": 3} and d["data"] == {"num_workers": 0}


@pytest.mark.parametrize("command", ["train", "advise-rank", "drift", "speed"])
def test_commands_that_build_a_backbone_share_the_flags(command):
    p = next(s for s in _parsers(build_parser()) if s.prog.endswith(" " + command))
    flags = {o for a in p._actions for o in a.option_strings}
    assert {"--config", "--set", "--backbone", "--backbone-arg", "--no-pretrained", "--weights"} <= flags
    if command != "speed":  # speed builds no data
        assert {"--dataset", "--data-root", "--num-workers", "--subset"} <= flags


def test_list_presets_shows_their_descriptions(capsys):
    from adaptertune.sweeps import PRESETS

    assert main(["list", "presets"]) == 0
    out = capsys.readouterr().out
    for info in PRESETS:
        assert info.name in out and info.description[:30] in out
    for command in ("sweep", "bench"):
        text = build_parser()._subparsers._group_actions[0].choices[command].format_help()
        assert "adaptertune list presets" in " ".join(text.split()), command


def test_bench_with_ray_missing_is_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # as if ray were not installed
    out = tmp_path / "b"
    assert main(["bench", "--preset", "test", "--executor", "ray", "--out-dir", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "pip install 'adaptertune[ray]'" in err[0], err
    assert not out.exists()  # nothing prepared, nothing run


def test_address_without_ray_is_an_error(tmp_path, capsys):
    assert main(["bench", "--preset", "test", "--address", "auto", "--out-dir", str(tmp_path / "b")]) == 2
    assert "--executor ray" in capsys.readouterr().err
