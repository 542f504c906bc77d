"""Sweep specs: a ``base`` run config plus a ``grid`` of values, expanded into named points (pure).

A spec (YAML)::

    name: my-sweep
    meta: {description: ..., runs: 6, estimated_gpu_hours: 0.1}
    base: {backbone: {name: test_vit, pretrained: false}, data: {name: imagefolder, root: data/x}}
    grid:
      train.seed: [0, 1, 2]
      method:                       # a value may be a bundle of keys that go together
        - head
        - {method: adapter, adapter.rank: 16}

A spec may also select ``train.lr`` (and ``train.weight_decay``) per point on validation: a ``tune`` block
at spec level, or in a grid bundle for that entry's points, plus an optional ``tune_budget``
(:mod:`adaptertune.sweeps.tuning_spec`). A bundle's ``tune`` is not a config key: it is kept on the point
(:attr:`SweepPoint.tune`) and left out of its name.

Each grid point is the product of one value per axis, in axis order (the last axis varies fastest). Its run
folder is named from its values, ``seed=0,method=adapter,rank=16``, so a sweep can be re-run or extended and
finds its finished points again.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import itertools
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import load_yaml
from ..config_keys import check_key, set_dotted
from ..errors import ConfigError
from .tuning_spec import check_block, parse_budget

__all__ = [
    "SweepPoint",
    "SweepSpec",
    "expand_grid",
    "format_value",
    "load_spec",
    "point_name",
    "short_key",
]

# Labels used in run-folder names for the commonest keys; others use their last dotted part.
_SHORT = {"data.name": "dataset", "backbone.name": "backbone", "train.seed": "seed", "adapter.rank": "rank"}
_MAX_NAME = 180  # keep folder names well under the usual 255-byte limit


@dataclass
class SweepSpec:
    """A parsed sweep spec.

    Args:
        name: the sweep's name (default results folder ``runs/<name>``).
        base: nested run config shared by every point.
        grid: axis key -> list of values; a value is a scalar/list for that key, or a mapping of dotted keys
            (a bundle) applied together.
        meta: free-form facts about the sweep (description, runs, estimated_gpu_hours, ...).
        tune: values of ``train.lr`` / ``train.weight_decay`` to select on validation for every point (a
            bundle's own ``tune`` replaces it for that entry); ``{}``: nothing is tuned.
        tune_budget: ``{epochs: E, seeds: [...], early_stop: P, pruner: ...}`` of each tuning run (default: the
            point's epochs, first seed and patience; no pruner: the full grid).
    """

    name: str
    base: dict[str, Any] = field(default_factory=dict)
    grid: dict[str, list[Any]] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)
    tune: dict[str, Any] = field(default_factory=dict)
    tune_budget: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not re.fullmatch(r"[A-Za-z0-9._-]+", self.name):
            raise ConfigError(f"Sweep `name` must be letters, digits, '.', '_' or '-'; got {self.name!r}.")
        if not isinstance(self.base, dict):
            raise ConfigError(f"Sweep `base` must be a mapping (a run config), got {type(self.base).__name__}.")
        if not isinstance(self.grid, dict):
            raise ConfigError(f"Sweep `grid` must map config keys to lists of values, got {self.grid!r}.")
        if not isinstance(self.meta, dict):
            raise ConfigError(f"Sweep `meta` must be a mapping, got {type(self.meta).__name__}.")
        self.tune = check_block(self.tune)
        parse_budget(self.tune_budget)
        for axis, values in self.grid.items():
            if not isinstance(values, list) or not values:
                raise ConfigError(f"Grid axis '{axis}' must be a non-empty list of values, got {values!r}.")
            for v in values:
                if isinstance(v, dict) and "tune" in v:
                    check_block(v["tune"], f"tune of grid entry {v!r}")
                for key in v if isinstance(v, dict) else [axis]:
                    if key != "tune" or not isinstance(v, dict):
                        check_key(key, " in the sweep grid")

    @classmethod
    def from_dict(cls, d: dict[str, Any], default_name: str = "sweep") -> SweepSpec:
        allowed = [f.name for f in dataclasses.fields(cls)]
        unknown = [k for k in d if k not in allowed]
        if unknown:
            raise ConfigError(f"Unknown sweep key '{unknown[0]}'. Valid keys: {', '.join(allowed)}.")
        return cls(name=d.get("name") or default_name, **{k: v for k, v in d.items() if k != "name"})


@dataclass(frozen=True)
class SweepPoint:
    """One grid point: its folder name, the values that define it and the full run config dict."""

    name: str
    values: dict[str, Any]  # dotted key -> value, in grid order
    config: dict[str, Any]
    tune: dict[str, Any] = field(default_factory=dict)  # the checked tune block of this point ({}: none)


def load_spec(path: str | Path) -> SweepSpec:
    """Read a sweep spec from YAML (the file's stem is the default name)."""
    return SweepSpec.from_dict(load_yaml(path), default_name=Path(path).stem)


def short_key(key: str) -> str:
    """The label of a key in folder names: ``data.name`` -> ``dataset``, ``adapter.placement`` -> ``placement``."""
    return _SHORT.get(key, key.rsplit(".", 1)[-1])


def format_value(value: Any) -> str:
    """A value as folder-name text: safe characters only (``every:2`` -> ``every-2``, ``[0, 5]`` -> ``0-5``)."""
    if isinstance(value, bool):
        text = str(value).lower()
    elif isinstance(value, float):
        text = f"{value:g}"
    elif isinstance(value, list | tuple):
        text = "-".join(format_value(v) for v in value)
    elif value is None:
        text = "none"
    else:
        text = str(value)
    return re.sub(r"[^A-Za-z0-9._+-]+", "-", text).strip("-") or "x"


def point_name(values: dict[str, Any]) -> str:
    """Folder name of a point: ``key=value`` pairs joined by commas, long names shortened with a hash."""
    name = ",".join(f"{short_key(k)}={format_value(v)}" for k, v in values.items())
    if len(name) > _MAX_NAME:
        digest = hashlib.sha1(name.encode()).hexdigest()[:10]
        name = f"{name[: _MAX_NAME - 11]}-{digest}"
    return name


def _axis_items(axis: str, value: Any) -> dict[str, Any]:
    return dict(value) if isinstance(value, dict) else {axis: value}


def expand_grid(spec: SweepSpec) -> list[SweepPoint]:
    """All points of ``spec`` (product of the axes, last axis fastest), each with its merged config.

    Raises:
        ConfigError: two points would share a folder name.
    """
    axes = list(spec.grid.items())
    points: list[SweepPoint] = []
    seen: dict[str, dict[str, Any]] = {}
    for combo in itertools.product(*(values for _, values in axes)):
        values: dict[str, Any] = {}
        tune = spec.tune
        for (axis, _), value in zip(axes, combo):
            items = _axis_items(axis, value)
            if "tune" in items and isinstance(value, dict):
                tune = check_block(items.pop("tune"))
            values.update(items)
        if clash := [k for k in tune if k in values]:
            raise ConfigError(f"`{clash[0]}` is both tuned and a grid value ({values[clash[0]]!r}); give it in one.")
        config = copy.deepcopy(spec.base)
        for key, value in values.items():
            set_dotted(config, key, copy.deepcopy(value))
        name = point_name(values)
        if name in seen:
            raise ConfigError(
                f"Sweep points {seen[name]} and {values} would share the run folder '{name}'; "
                "give grid values that differ in their text."
            )
        seen[name] = values
        points.append(SweepPoint(name, values, config, tune))
    return points
