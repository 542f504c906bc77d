"""Dotted config keys (``train.lr``, ``adapter.rank``, ``backbone.args.img_size``): the one place that knows them.

Every key is read off the dataclasses themselves: the sections of :class:`~adaptertune.config.RunConfig`
(``backbone``, ``data``, ``train``), its plain fields (``method``, ``out_dir``) and, under ``adapter.``, the
options classes of the registered methods (:data:`~adaptertune.methods.METHODS`), so a new field or a new
method's option is a valid key with no table to update. ``backbone.args.NAME`` takes any model kwarg. A leaf
name that is unique across all of them is accepted alone (``lr`` means ``train.lr``).
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import yaml

from .config import RunConfig
from .errors import ConfigError
from .methods import METHODS

__all__ = [
    "ARGS_PREFIX",
    "KeyInfo",
    "apply_overrides",
    "apply_values",
    "canonical_key",
    "check_key",
    "get_dotted",
    "key_infos",
    "parse_override",
    "set_dotted",
    "valid_keys",
]

ARGS_PREFIX = "backbone.args."  # free-form model kwargs: any name, any YAML value
_MISSING = object()


@dataclass(frozen=True)
class KeyInfo:
    """One dotted key: the dataclass that owns it, its field and its resolved type annotation."""

    key: str
    owner: type
    field: dataclasses.Field
    type: Any

    @property
    def section(self) -> str:
        return self.key.rpartition(".")[0]

    @property
    def leaf(self) -> str:
        return self.field.name


def _sections() -> dict[str, type]:
    """RunConfig's nested dataclass sections (``backbone``, ``data``, ``train``), from its own annotations."""
    hints = typing.get_type_hints(RunConfig)
    return {
        f.name: hints[f.name]
        for f in dataclasses.fields(RunConfig)
        if isinstance(hints[f.name], type) and dataclasses.is_dataclass(hints[f.name])
    }


def key_infos() -> dict[str, KeyInfo]:
    """Every dotted key of a run config, in declaration order (``adapter.*``: the registered methods' options;
    an option several methods share is described by the first method that declares it)."""
    out: dict[str, KeyInfo] = {}
    sections = _sections()
    top_hints = typing.get_type_hints(RunConfig)
    for f in dataclasses.fields(RunConfig):
        if f.name in sections:
            cls = sections[f.name]
            hints = typing.get_type_hints(cls)
            for sf in dataclasses.fields(cls):
                out[f"{f.name}.{sf.name}"] = KeyInfo(f"{f.name}.{sf.name}", cls, sf, hints[sf.name])
        elif f.name == "adapter":
            for method in METHODS:
                if method.options is None:
                    continue
                hints = typing.get_type_hints(method.options)
                for of in dataclasses.fields(method.options):
                    key = f"adapter.{of.name}"
                    out.setdefault(key, KeyInfo(key, method.options, of, hints[of.name]))
        else:
            out[f.name] = KeyInfo(f.name, RunConfig, f, top_hints[f.name])
    return out


def valid_keys() -> set[str]:
    """Every dotted key (``backbone.args`` stands for ``backbone.args.NAME``)."""
    return set(key_infos())


def _aliases(infos: Mapping[str, KeyInfo]) -> dict[str, str]:
    owners: dict[str, list[str]] = {}
    for key, info in infos.items():
        owners.setdefault(info.leaf, []).append(key)
    return {leaf: keys[0] for leaf, keys in owners.items() if len(keys) == 1 and leaf not in infos}


def canonical_key(key: Any, where: str = "") -> str:
    """The dotted key ``key`` names (``lr`` -> ``train.lr``, ``batch-size`` -> ``train.batch_size``).

    Raises:
        ConfigError: no config key has that name (the message lists the valid ones).
    """
    infos = key_infos()
    if isinstance(key, str):
        norm = key.strip().replace("-", "_")
        if norm.startswith(ARGS_PREFIX) and len(norm) > len(ARGS_PREFIX):
            return norm
        if norm in infos:
            return norm
        if (alias := _aliases(infos).get(norm)) is not None:
            return alias
    _unknown(key, where, infos)


def check_key(key: Any, where: str = "") -> None:
    """Raise ConfigError unless ``key`` is a full dotted key as written (no alias), e.g. in a sweep grid."""
    infos = key_infos()
    if not isinstance(key, str) or not (key in infos or (key.startswith(ARGS_PREFIX) and len(key) > len(ARGS_PREFIX))):
        _unknown(key, where, infos)


def _unknown(key: Any, where: str, infos: Mapping[str, KeyInfo]) -> typing.NoReturn:
    shown = sorted(infos) + [f"{ARGS_PREFIX}NAME"]
    raise ConfigError(f"Unknown config key '{key}'{where}. Valid keys: {', '.join(shown)}.")


def get_dotted(d: Mapping[str, Any], key: str, default: Any = _MISSING) -> Any:
    """``get_dotted(d, "adapter.rank")`` is ``d["adapter"]["rank"]``; a missing key returns ``default``
    (KeyError without one)."""
    cur: Any = d
    for part in key.split("."):
        if not isinstance(cur, Mapping) or part not in cur:
            if default is _MISSING:
                raise KeyError(key)
            return default
        cur = cur[part]
    return cur


def set_dotted(d: dict[str, Any], key: str, value: Any) -> None:
    """``set_dotted(d, "adapter.rank", 16)`` sets ``d["adapter"]["rank"] = 16`` in place (creating sections)."""
    parts = key.split(".")
    cur = d
    for part in parts[:-1]:
        if not isinstance(cur.get(part), dict):
            cur[part] = {}
        cur = cur[part]
    cur[parts[-1]] = value


def apply_values(d: Mapping[str, Any], values: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of the nested config ``d`` with ``{key: value}`` set (keys as :func:`canonical_key` accepts,
    values already typed); the input's sections are not modified."""
    out = _copy_sections(d)
    for key, value in values.items():
        set_dotted(out, canonical_key(key), value)
    return out


def parse_override(item: str) -> tuple[str, Any]:
    """``"train.lr=1e-3"`` -> ``("train.lr", 0.001)``: a typed ``KEY=VALUE`` (the value read as YAML).

    Raises:
        ConfigError: not ``key=value``, or an unknown key.
    """
    key, sep, raw = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"Override '{item}' must look like key=value (e.g. train.lr=0.001).")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    return canonical_key(key), value


def apply_overrides(d: Mapping[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    """Apply ``key=value`` strings typed by a person (``--set``, the sweep and train overrides) to a copy of
    the nested config ``d``; see :func:`parse_override`."""
    return apply_values(d, dict(parse_override(item) for item in overrides))


def _copy_sections(d: Mapping[str, Any]) -> dict[str, Any]:
    return {k: _copy_sections(v) if isinstance(v, Mapping) else v for k, v in d.items()}
