"""Command-line flags generated from the config dataclasses, and the config they build.

Each field of :class:`~adaptertune.config.RunConfig`'s sections, and each option of the registered methods'
options classes (as ``adapter.*``: the selected method's options), is one flag: ``--{leaf}`` (``--lr``,
``--rank``, ``--targets``), typed from the field's annotation (``bool``: ``--x/--no-x``; ``int``, ``float``,
``str``; ``X | None`` also takes ``none``), its help text the field's entry in the dataclass docstring's
``Args:``. A new field or a new method's option becomes a flag with nothing to add here. A method's own
section (``lora.rank``) is set with ``--set lora.rank=8``. Parsed values are set on the config dict as they
are (no ``key=value`` text parsed again; ``--backbone-arg K=V`` is read once, into ``("K", value)``).
Precedence: the dataclass defaults, a command's own defaults, ``--config`` files (in order), flags, then
``--set KEY=VALUE`` (and ``train``'s positional overrides).
"""

from __future__ import annotations

import argparse
import inspect
import re
import types
import typing
from collections.abc import Mapping
from typing import Any

from ..config import RunConfig, load_yaml, merge_dicts
from ..config_keys import (
    ARGS_PREFIX,
    KeyInfo,
    apply_overrides,
    apply_values,
    get_dotted,
    is_method_key,
    key_infos,
    parse_value,
)
from ..errors import ConfigError

__all__ = [
    "GROUPS",
    "ArgumentParser",
    "add_config_flags",
    "add_rank_flag",
    "config_dict",
    "field_help",
    "flag_name",
    "model_arg",
    "run_config",
]

# flag names that are not the field's leaf name (kept as users, the README and the tests know them)
_RENAMES = {
    "backbone.name": "backbone",
    "backbone.args": "backbone-arg",
    "data.name": "dataset",
    "data.root": "data-root",
    "data.split": "data-split",
}
# flag groups: which keys (by prefix) each holds
GROUPS: dict[str, tuple[str, ...]] = {
    "backbone": ("backbone.",),
    "data": ("data.",),
    "method": ("method", "adapter."),
    "training": ("train.",),
    "output": ("out_dir",),
}
_DEST = "cfg:"  # namespace prefix of generated flags: vars(args)["cfg:train.lr"]
_NONE = ("none", "null")


class ArgumentParser(argparse.ArgumentParser):
    """argparse without prefix matching (``--seed`` is never read as ``--seeds``); subparsers inherit it."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["allow_abbrev"] = False
        super().__init__(*args, **kwargs)


def field_help(cls: type) -> dict[str, str]:
    """``{field: text}`` from the ``Args:`` section of ``cls``'s Google-style docstring."""
    lines = inspect.cleandoc(cls.__doc__ or "").splitlines()
    out: dict[str, str] = {}
    try:
        start = next(i for i, line in enumerate(lines) if line.strip() == "Args:") + 1
    except StopIteration:
        return out
    indent, current = None, None
    for line in lines[start:]:
        if not line.strip():
            continue
        depth = len(line) - len(line.lstrip())
        if indent is None:
            indent = depth
        if depth < indent:
            break
        m = re.match(r"\s*([A-Za-z_]\w*)\s*(?:\([^)]*\))?:\s*(.*)", line)
        if depth == indent and m:
            current = m.group(1)
            out[current] = m.group(2).strip()
        elif current is not None:
            out[current] += " " + line.strip()
    return out


def flag_name(info: KeyInfo, infos: Mapping[str, KeyInfo]) -> str:
    """``--lr`` for ``train.lr``; ``--SECTION-LEAF`` when another key has the same leaf name."""
    if info.key in _RENAMES:
        return "--" + _RENAMES[info.key]
    clash = any(o.leaf == info.leaf and o.key != info.key for o in infos.values())
    name = f"{info.section}-{info.leaf}" if clash and info.section else info.leaf
    return "--" + name.replace("_", "-").replace(".", "-")


def _converter(name: str, bases: tuple[type, ...], optional: bool) -> Any:
    """The first of ``bases`` that reads ``raw``; text none of them reads is passed on as it is, for the
    dataclass's check to reject with its one-line message (``adapter.rank must be an integer, got 2.5``)."""

    def convert(raw: str) -> Any:
        if optional and raw.strip().lower() in _NONE:
            return None
        for base in bases:
            try:
                return base(raw)
            except ValueError:
                continue
        return raw

    convert.__name__ = name
    return convert


def model_arg(item: str) -> tuple[str, Any]:
    """``--backbone-arg img_size=32`` -> ``("img_size", 32)`` (the value read as YAML)."""
    name, sep, raw = item.partition("=")
    if not sep or not name.strip():
        raise argparse.ArgumentTypeError(f"'{item}' must look like NAME=VALUE (e.g. img_size=32)")
    return name.strip(), parse_value(raw)


def _type_kwargs(tp: Any) -> dict[str, Any]:
    """argparse keywords for a field annotated ``tp``."""
    args = typing.get_args(tp) if isinstance(tp, types.UnionType) or typing.get_origin(tp) is typing.Union else ()
    optional = type(None) in args
    members = [a for a in args if a is not type(None)] or [tp]
    if members == [bool]:
        return {"action": argparse.BooleanOptionalAction}
    if len(members) == 1 and members[0] in (int, float):
        base = members[0]
        bases = (int, float) if base is int else (float,)  # 2.5 for an int field: "must be an integer, got 2.5"
        return {"type": _converter(base.__name__, bases, optional), "metavar": "N" if base is int else "X"}
    # str, or a union the dataclass parses itself (placement: "all", "every:2", "0,5,11")
    return {"type": _converter("str", (str,), optional)}


def _help(info: KeyInfo, helps: dict[type, dict[str, str]]) -> str:
    if info.owner not in helps:
        helps[info.owner] = field_help(info.owner)
    text = helps[info.owner].get(info.leaf, "").replace("``", "")
    default = info.field.default
    if isinstance(default, bool | int | float | str):
        text += f" (default: {default})"
    return f"{text} [{info.key}]".strip().replace("%", "%%")


def add_rank_flag(p: argparse.ArgumentParser) -> None:
    """``--rank R``: a nested run (adapter.nested) at its leading rank R (export and predict)."""
    p.add_argument(
        "--rank",
        type=int,
        default=None,
        metavar="R",
        help="a nested run (adapter.nested) at rank R (1..its rank); default: its full rank",
    )


def add_config_flags(p: argparse.ArgumentParser, groups: tuple[str, ...] = tuple(GROUPS)) -> None:
    """Add ``--config FILE``, ``--set KEY=VALUE`` and one flag per config key of ``groups`` to ``p``."""
    p.add_argument(
        "--config", action="append", default=[], metavar="FILE", help="YAML run config (repeatable; later wins)"
    )
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="set any config key, e.g. train.lr=0.001 or backbone.args.img_size=56 (repeatable)",
    )
    # a method's own section (`lora.rank`) has no flag of its own: --set lora.rank=8 (the flags are `adapter.*`)
    infos, helps = {k: v for k, v in key_infos().items() if not is_method_key(k)}, {}
    for group in groups:
        g = p.add_argument_group(group)
        for info in infos.values():
            if not any(info.key == pre or (pre.endswith(".") and info.key.startswith(pre)) for pre in GROUPS[group]):
                continue
            dest = _DEST + info.key
            if info.key == "backbone.args":
                g.add_argument(
                    flag_name(info, infos),
                    action="append",
                    type=model_arg,
                    dest=dest,
                    default=argparse.SUPPRESS,
                    metavar="K=V",
                    help="a timm model kwarg, e.g. img_size=32 (repeatable) [backbone.args.K]",
                )
                continue
            kwargs = _type_kwargs(info.type)
            if kwargs.get("action") is None:
                kwargs.setdefault("metavar", info.leaf.upper())
            g.add_argument(
                flag_name(info, infos),
                dest=dest,
                default=argparse.SUPPRESS,  # only flags given on the command line override config files
                help=_help(info, helps),
                **kwargs,
            )


def config_dict(
    args: argparse.Namespace, defaults: dict[str, Any] | None = None, overrides: list[str] = ()
) -> dict[str, Any]:
    """The nested run-config dict of a command: ``defaults``, ``--config`` files, flags, ``--set`` and
    ``overrides`` (``KEY=VALUE`` strings), later winning."""
    d = dict(defaults or {})
    for path in args.config:
        d = merge_dicts(d, load_yaml(path))
    values = {k[len(_DEST) :]: v for k, v in vars(args).items() if k.startswith(_DEST)}
    values.update({ARGS_PREFIX + name: value for name, value in values.pop("backbone.args", [])})
    return apply_overrides(apply_values(d, values), [*args.set, *overrides])


def run_config(
    args: argparse.Namespace, defaults: dict[str, Any] | None = None, required: tuple[str, ...] = ()
) -> RunConfig:
    """The validated config of a command that builds a backbone or data (``advise-rank``, ``drift``, ``speed``).

    Raises:
        ConfigError: a key of ``required`` set neither by a flag nor by a ``--config`` file.
    """
    d = config_dict(args, defaults)
    infos = key_infos()
    for key in required:
        if get_dotted(d, key, None) is None:
            raise ConfigError(f"{args.command} needs {flag_name(infos[key], infos)} (or `{key}` in a --config file).")
    return RunConfig.from_dict(d)
