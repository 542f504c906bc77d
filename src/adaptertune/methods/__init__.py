"""Methods registry: ``head``, ``full``, ``adapter`` (and more registered by later modules)."""

from . import basic  # noqa: E402,F401,I001  (registers head, full, adapter)
from .registry import METHODS, MethodInfo, build_method, register_method, resolve_adapter_config

__all__ = ["METHODS", "MethodInfo", "build_method", "register_method", "resolve_adapter_config"]
