"""A small generic registry, in the shape of timm's ``OptimizerRegistry``.

Entries are frozen dataclass records with a ``name`` and a ``description``. Registering a duplicate is an
error; an unknown name is an error that suggests close matches and lists every valid name.
"""

from __future__ import annotations

import difflib
import fnmatch
from collections.abc import Callable, Iterator
from typing import Generic, Protocol, TypeVar

from .errors import UnknownNameError

__all__ = ["Registry"]


class _Named(Protocol):
    name: str
    description: str


T = TypeVar("T", bound=_Named)


class Registry(Generic[T]):
    """Name -> record mapping for one kind of thing (``"backbone"``, ``"dataset"``, ``"method"``, ...)."""

    def __init__(self, kind: str, load: Callable[[], None] | None = None) -> None:
        """``load``: called once, the first time the registry is consulted by name or listed (plugins that
        register more entries; registering does not call it). If it raises it is called again next time."""
        self.kind = kind
        self._entries: dict[str, T] = {}
        self._load = load

    def _loaded(self) -> dict[str, T]:
        if self._load is not None:
            load, self._load = self._load, None
            try:
                load()
            except BaseException:
                self._load = load
                raise
        return self._entries

    def register(self, entry: T) -> T:
        """Add ``entry``; a second entry with the same name raises ``KeyError``."""
        if entry.name in self._entries:
            raise KeyError(f"There is already a {self.kind} called '{entry.name}'; choose a unique name.")
        self._entries[entry.name] = entry
        return entry

    def unregister(self, name: str) -> T:
        """Remove and return the entry called ``name`` (for tests and temporary plugins).

        Raises:
            UnknownNameError: ``name`` is not registered.
        """
        entry = self.get(name)
        del self._entries[name]
        return entry

    def get(self, name: str) -> T:
        """Return the entry called ``name``.

        Raises:
            UnknownNameError: ``name`` is not registered; the message lists close matches and all names.
        """
        try:
            return self._loaded()[name]
        except KeyError:
            raise UnknownNameError(self.unknown_message(name)) from None

    def unknown_message(self, name: str) -> str:
        close = difflib.get_close_matches(str(name), list(self._entries), n=3)
        hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        return f"Unknown {self.kind} '{name}'.{hint} Valid {self.kind}s: {', '.join(self.names())}."

    def names(self, filter: str | None = None) -> list[str]:
        """Sorted names, optionally filtered by a shell-style pattern (``"vit_*"``)."""
        names = sorted(self._loaded())
        return [n for n in names if fnmatch.fnmatch(n, filter)] if filter else names

    def list(self, filter: str | None = None) -> list[T]:
        """Sorted entries, optionally filtered by a shell-style pattern."""
        return [self._entries[n] for n in self.names(filter)]

    def __contains__(self, name: object) -> bool:
        return name in self._loaded()

    def __iter__(self) -> Iterator[T]:
        return iter(self.list())

    def __len__(self) -> int:
        return len(self._loaded())
