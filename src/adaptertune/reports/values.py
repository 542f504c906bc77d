"""Config and protocol values as a person reads them in tables and messages, not as Python writes them."""

from __future__ import annotations

from typing import Any

__all__ = ["plain"]


def plain(value: Any) -> str:
    """``None`` -> ``none``, booleans ``true`` / ``false``, floats to 4 significant digits, lists ``0, 1, 2``
    (a nested list in brackets), dicts ``k=v, k=v``, strings unquoted."""
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list | tuple):
        return ", ".join(f"[{plain(v)}]" if isinstance(v, list | tuple) else plain(v) for v in value) or "none"
    if isinstance(value, dict):
        return ", ".join(f"{k}={plain(v)}" for k, v in value.items()) or "none"
    return str(value)
