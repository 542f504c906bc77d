"""Transfer methods: each turns a backbone with a fresh head into the model to train."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from ..config import AdapterConfig
from ..errors import ConfigError
from ..registry import Registry

__all__ = ["METHODS", "MethodInfo", "build_method", "register_method", "resolve_adapter_config"]


@dataclass(frozen=True)
class MethodInfo:
    """A named method.

    Args:
        name: registry name (``--method``).
        description: one line.
        build: ``build(model, adapter_config) -> model``; freezes what the method keeps frozen.
        defaults: the method's own hyper-parameter defaults (``lr``, ``weight_decay``).
        uses_adapter: the method takes adapter options (rank, alpha, init, placement, ...).
        adapter_options: the adapter options the method accepts (None: all of them). Setting any other
            option to a non-default value is an error.
        cached_features: train the head on features computed once by the frozen backbone (no augmentation).
    """

    name: str
    description: str
    build: Callable[[nn.Module, AdapterConfig | None], nn.Module]
    defaults: dict[str, Any] = field(default_factory=dict)
    uses_adapter: bool = False
    adapter_options: frozenset[str] | None = None
    cached_features: bool = False


METHODS: Registry[MethodInfo] = Registry("method")


def register_method(info: MethodInfo) -> MethodInfo:
    return METHODS.register(info)


def resolve_adapter_config(method: str, adapter: AdapterConfig | None) -> AdapterConfig | None:
    """The method's adapter config: a default one for adapter methods; an error if given to others."""
    info = METHODS.get(method)
    if info.uses_adapter:
        adapter = adapter or AdapterConfig()
        _check_adapter_options(info, adapter)
        return adapter
    if adapter is not None:
        raise ConfigError(
            f"Method '{method}' takes no adapter options (rank, alpha, init, placement, dropout); remove them or "
            f"use a method that does: {', '.join(m.name for m in METHODS if m.uses_adapter)}."
        )
    return None


def _check_adapter_options(info: MethodInfo, adapter: AdapterConfig) -> None:
    if info.adapter_options is None:
        return
    default = AdapterConfig()
    for f in dataclasses.fields(AdapterConfig):
        if f.name not in info.adapter_options and getattr(adapter, f.name) != getattr(default, f.name):
            raise ConfigError(
                f"Option `adapter.{f.name}`={getattr(adapter, f.name)!r} does not apply to method '{info.name}'; "
                f"it accepts {', '.join(sorted(info.adapter_options))}."
            )


def build_method(method: str, model: nn.Module, adapter: AdapterConfig | None = None) -> nn.Module:
    """Apply ``method`` to ``model`` (in place) and return it."""
    return METHODS.get(method).build(model, resolve_adapter_config(method, adapter))
