"""Dotted config keys (``train.lr``, ``adapter.rank``, ``backbone.args.img_size``): the one place that knows them.

Every key is read off the dataclasses themselves: the sections of :class:`~adaptertune.config.RunConfig`
(``backbone``, ``data``, ``train``), its plain fields (``method``, ``out_dir``) and the options classes of the
registered methods (:data:`~adaptertune.methods.METHODS`): each under its method's own section (``lora.rank``,
``vpt.prompts``), and all of them under ``adapter.`` (the selected method's options, the legacy form), so a
new field or a new method's option is a valid key with no table to update. ``backbone.args.NAME`` takes any
model kwarg. A leaf name that is unique across all of them is accepted alone (``lr`` means ``train.lr``;
``rank`` means ``adapter.rank``, the selected method's). The keys are read once per set of registered methods
(a plugin that registers or unregisters a method changes them).
"""

from __future__ import annotations

import dataclasses
import difflib
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import yaml

from .config import LEGACY_OPTIONS, RunConfig
from .errors import ConfigError

__all__ = [
    "ARGS_PREFIX",
    "KeyInfo",
    "apply_overrides",
    "apply_values",
    "canonical_key",
    "canonical_options",
    "check_key",
    "flatten_config",
    "get_dotted",
    "is_method_key",
    "key_infos",
    "options_section",
    "parse_override",
    "parse_value",
    "set_dotted",
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


@dataclass(frozen=True)
class _Keys:
    infos: Mapping[str, KeyInfo]
    aliases: Mapping[str, str]  # leaf name -> its dotted key, for leaves that name one key only


_cache: dict[tuple, _Keys] = {}  # one entry: keyed on the registered methods' (name, options class)


def _read_keys(methods: Iterable[Any]) -> _Keys:
    """Every key of RunConfig's fields, its nested dataclass sections and ``methods``' options classes."""
    infos: dict[str, KeyInfo] = {}
    hints = typing.get_type_hints(RunConfig)
    for f in dataclasses.fields(RunConfig):
        tp = hints[f.name]
        if isinstance(tp, type) and dataclasses.is_dataclass(tp):  # backbone, data, train
            section_hints = typing.get_type_hints(tp)
            for sf in dataclasses.fields(tp):
                infos[f"{f.name}.{sf.name}"] = KeyInfo(f"{f.name}.{sf.name}", tp, sf, section_hints[sf.name])
        elif f.name == "options":  # the legacy `adapter.*` (any method's option), then each method's own
            for section in (LEGACY_OPTIONS, *(m.name for m in methods if m.name != LEGACY_OPTIONS)):
                for method in methods if section == LEGACY_OPTIONS else [m for m in methods if m.name == section]:
                    if method.options is None:
                        continue
                    option_hints = typing.get_type_hints(method.options)
                    for of in dataclasses.fields(method.options):
                        key = f"{section}.{of.name}"
                        infos.setdefault(key, KeyInfo(key, method.options, of, option_hints[of.name]))
        else:
            infos[f.name] = KeyInfo(f.name, RunConfig, f, tp)
    owners: dict[str, list[str]] = {}
    for key, info in infos.items():
        if not is_method_key(key, methods):  # a bare option name is the legacy `adapter.NAME`
            owners.setdefault(info.leaf, []).append(key)
    aliases = {leaf: keys[0] for leaf, keys in owners.items() if len(keys) == 1 and leaf not in infos}
    return _Keys(MappingProxyType(infos), MappingProxyType(aliases))


def is_method_key(key: str, methods: Iterable[Any] | None = None) -> bool:
    """``lora.rank``: a key of a method's own options section (not the legacy ``adapter.*``)."""
    section = key.partition(".")[0]
    if methods is None:
        from .methods import METHODS

        methods = METHODS
    return section != LEGACY_OPTIONS and "." in key and any(m.name == section for m in methods)


def _keys() -> _Keys:
    from .methods import METHODS  # imports torch: only when a key is looked up, not on `adaptertune --help`

    methods = list(METHODS)
    signature = tuple((m.name, m.options) for m in methods)
    if signature not in _cache:
        _cache.clear()
        _cache[signature] = _read_keys(methods)
    return _cache[signature]


def key_infos() -> Mapping[str, KeyInfo]:
    """Every dotted key of a run config, in declaration order: the sections' fields, ``adapter.*`` (the
    selected method's options: any registered method's option, described by the first method that declares
    it), then each method's own section (``lora.rank``)."""
    return _keys().infos


def canonical_key(key: Any, where: str = "") -> str:
    """The dotted key ``key`` names (``lr`` -> ``train.lr``, ``batch-size`` -> ``train.batch_size``).

    Raises:
        ConfigError: no config key has that name (the message lists the valid ones).
    """
    keys = _keys()
    if isinstance(key, str):
        section, dot, leaf = key.strip().partition(".")
        # dashes mean underscores in a field name, never in a method's section name (``vpt-deep.prompts``)
        for norm in (f"{section}{dot}{leaf.replace('-', '_')}", key.strip().replace("-", "_")):
            if norm.startswith(ARGS_PREFIX) and len(norm) > len(ARGS_PREFIX):
                return norm
            if norm in keys.infos:
                return norm
            if (alias := keys.aliases.get(norm)) is not None:
                return alias
    _unknown(key, where, keys.infos)


def check_key(key: Any, where: str = "") -> None:
    """Raise ConfigError unless ``key`` is a full dotted key as written (no alias), e.g. in a sweep grid."""
    infos = key_infos()
    if not isinstance(key, str) or not (key in infos or (key.startswith(ARGS_PREFIX) and len(key) > len(ARGS_PREFIX))):
        _unknown(key, where, infos)


# names other trainers use for our keys (Hugging Face TrainingArguments, timm's train.py, common shorthands)
_SYNONYMS = {
    "learning_rate": "lr",
    "wd": "weight_decay",
    "num_epochs": "epochs",
    "num_train_epochs": "epochs",
    "max_epochs": "epochs",
    "bs": "batch_size",
    "per_device_train_batch_size": "batch_size",
    "warmup": "warmup_epochs",
    "clip_grad": "grad_clip",
    "max_grad_norm": "grad_clip",
    "smoothing": "label_smoothing",
    "model": "name",
    "r": "rank",
    "lora_alpha": "alpha",
}


def suggest_keys(key: str, valid: Iterable[str], n: int = 3) -> list[str]:
    """The valid dotted keys closest to ``key``: a known synonym of its last part in the same section (or any
    section), else difflib's close matches on the whole key and on the last part alone."""
    valid = sorted(valid)
    norm = key.strip().replace("-", "_")
    section, _, leaf = norm.rpartition(".")
    leaves: dict[str, list[str]] = {}
    for k in valid:
        leaves.setdefault(k.rpartition(".")[2], []).append(k)
    if (target := _SYNONYMS.get(leaf)) in leaves:
        same = [k for k in leaves[target] if k.rpartition(".")[0] == section]
        return same or leaves[target][:n]
    out = difflib.get_close_matches(norm, valid, n=n, cutoff=0.75)
    for close in difflib.get_close_matches(leaf, list(leaves), n=n, cutoff=0.75):
        out += [k for k in leaves[close] if k not in out]
    return out[:n]


def _unknown(key: Any, where: str, infos: Mapping[str, KeyInfo]) -> typing.NoReturn:
    close = suggest_keys(key, infos) if isinstance(key, str) else []
    hint = f" Did you mean {' or '.join(f'`{c}`' for c in close)}?" if close else ""
    shown = sorted(infos) + [f"{ARGS_PREFIX}NAME"]
    raise ConfigError(f"Unknown config key '{key}'{where}.{hint} Valid keys: {', '.join(shown)}.")


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


def flatten_config(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"train": {"lr": 1}}`` -> ``{"train.lr": 1}`` (the inverse of :func:`set_dotted`); ``backbone.args``
    stays one value (timm kwargs)."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, Mapping) and k != "args":
            out.update(flatten_config(v, f"{prefix}{k}."))
        else:
            out[prefix + k] = v
    return out


def apply_values(d: Mapping[str, Any], values: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of the nested config ``d`` with ``{key: value}`` set (keys as :func:`canonical_key` accepts,
    values already typed); the input's sections are not modified."""
    out = _copy_sections(d)
    for key, value in values.items():
        set_dotted(out, canonical_key(key), value)
    return out


def parse_value(raw: str) -> Any:
    """A value typed by a person, read as YAML (``"0.001"`` -> 0.001, ``"true"`` -> True, ``""`` -> None); text
    that is not valid YAML stays text (the config dataclasses coerce strings such as ``"1e-3"`` themselves)."""
    try:
        return yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        return raw


def parse_override(item: str) -> tuple[str, Any]:
    """``"train.lr=0.001"`` -> ``("train.lr", 0.001)``: a typed ``KEY=VALUE`` (the value: :func:`parse_value`).

    Raises:
        ConfigError: not ``key=value``, or an unknown key.
    """
    key, sep, raw = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"Override '{item}' must look like key=value (e.g. train.lr=0.001).")
    return canonical_key(key), parse_value(raw)


def apply_overrides(d: Mapping[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    """Apply ``key=value`` strings typed by a person (``--set``, the sweep and train overrides) to a copy of
    the nested config ``d``; see :func:`parse_override`."""
    return apply_values(d, dict(parse_override(item) for item in overrides))


def _copy_sections(d: Mapping[str, Any]) -> dict[str, Any]:
    return {k: _copy_sections(v) if isinstance(v, Mapping) else v for k, v in d.items()}


def canonical_options(config: dict[str, Any]) -> dict[str, Any]:
    """A resolved config mapping (``config.yaml``) in the form new runs write: its options under the method's
    own key. Runs written before per-method sections recorded them under ``adapter:`` (null for a method
    without options)."""
    method, legacy = config.get("method"), config.get(LEGACY_OPTIONS)
    if not isinstance(method, str) or method == LEGACY_OPTIONS or LEGACY_OPTIONS not in config:
        return config
    out = {k: v for k, v in config.items() if k != LEGACY_OPTIONS}
    if legacy is not None and method not in config:
        out = {**{k: v for k, v in out.items() if k in ("backbone", "data", "method")}, method: legacy, **out}
    return out


def options_section(config: Any) -> dict[str, Any] | None:
    """The options a run config mapping (``config.yaml``, an adapter file's metadata) records for its method:
    its own section (``lora:``), else the legacy ``adapter:`` (every run written before per-method sections),
    else a file metadata's ``options``; None when it has none."""
    if not isinstance(config, dict):
        return None
    for key in (config.get("method"), "options", LEGACY_OPTIONS):
        if isinstance(key, str) and isinstance(config.get(key), dict):
            return config[key]
    return None
