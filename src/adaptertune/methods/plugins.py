"""Methods written outside the package: plugins that subclass :class:`~adaptertune.methods.Method` and call
:func:`~adaptertune.methods.register_method` when imported.

Three ways in, all loaded the first time :data:`~adaptertune.methods.METHODS` is consulted by name or listed:

- the Python entry-point group ``adaptertune.methods`` of an installed package (the entry point's module is
  imported; a :class:`Method` instance or subclass it names is registered unless it registered itself);
- ``ADAPTERTUNE_PLUGINS``: comma-separated module names or ``.py`` file paths;
- ``adaptertune --plugin MODULE`` (repeatable): imported at once, and added to ``ADAPTERTUNE_PLUGINS`` so that
  every child process (sweep workers under spawn, ``speed``'s memory probes, DDP workers) imports it too.

A plugin that fails to import is a one-line :class:`~adaptertune.errors.ConfigError` naming it and the error.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import os
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from ..errors import ConfigError

__all__ = ["ENTRY_POINT_GROUP", "PLUGINS_ENV", "add_plugins", "import_env_plugins", "load_plugins"]

ENTRY_POINT_GROUP = "adaptertune.methods"
PLUGINS_ENV = "ADAPTERTUNE_PLUGINS"
_imported: set[str] = set()  # plugins (module names, resolved file paths) imported in this process


def add_plugins(plugins: Iterable[str]) -> list[str]:
    """Import ``plugins`` (module names or ``.py`` paths) now and add them to ``ADAPTERTUNE_PLUGINS`` in this
    process's environment, so that child processes started later import them too. Returns them as recorded
    (file paths made absolute).

    Raises:
        ConfigError: a plugin that cannot be imported (its name and the exception, one line).
    """
    plugins = [_normal(p) for p in plugins if p.strip()]
    for plugin in plugins:
        _import(plugin)
    known = _env_plugins()
    os.environ[PLUGINS_ENV] = ",".join([*known, *(p for p in plugins if p not in known)])
    return plugins


def load_plugins(accept: Callable[[Any], None]) -> None:
    """Import every plugin: the ``adaptertune.methods`` entry points, then ``ADAPTERTUNE_PLUGINS``; each once
    per process. :data:`~adaptertune.methods.METHODS` calls this on first use, with ``accept``: what registers
    the object an entry point names (a Method instance or subclass that did not register itself).

    Raises:
        ConfigError: a plugin that cannot be imported.
    """
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        if ep.value in _imported:
            continue
        try:
            obj = ep.load()
        except Exception as e:
            raise ConfigError(
                f"Method plugin '{ep.value}' (entry point '{ep.name}') failed to import: {_why(e)}"
            ) from e
        _imported.add(ep.value)
        accept(obj)
    import_env_plugins()


def import_env_plugins() -> None:
    """Import the plugins ``ADAPTERTUNE_PLUGINS`` names (a child process's first step: sweep workers).

    Raises:
        ConfigError: a plugin that cannot be imported.
    """
    for plugin in _env_plugins():
        _import(plugin)


def _env_plugins() -> list[str]:
    return [p.strip() for p in os.environ.get(PLUGINS_ENV, "").split(",") if p.strip()]


def _normal(plugin: str) -> str:
    plugin = plugin.strip()
    return str(Path(plugin).expanduser().resolve()) if plugin.endswith(".py") else plugin


def _import(plugin: str) -> None:
    if plugin in _imported:
        return
    try:
        if plugin.endswith(".py"):
            path = Path(plugin)
            if not path.is_file():
                raise FileNotFoundError(f"no file {plugin}")
            name = path.stem
            if name not in sys.modules:  # a file imported under its stem, so its classes pickle by that name
                spec = importlib.util.spec_from_file_location(name, path)
                module = importlib.util.module_from_spec(spec)
                sys.modules[name] = module
                try:
                    spec.loader.exec_module(module)
                except BaseException:
                    del sys.modules[name]
                    raise
        else:
            importlib.import_module(plugin)
    except Exception as e:
        raise ConfigError(f"Method plugin '{plugin}' failed to import: {_why(e)}") from e
    _imported.add(plugin)


def _why(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}".rstrip(": ")
