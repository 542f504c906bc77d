"""Methods registry: ``head``, ``full``, ``adapter``, ``parallel``, ``lora``, ``bitfit``, ``linear-probe-cached``."""

from . import basic  # noqa: E402,F401,I001  (registers head, full, adapter)
from . import bitfit, linear_probe, lora, parallel  # noqa: E402,F401  (register the baselines)
from .registry import METHODS, MethodInfo, build_method, register_method, resolve_adapter_config

__all__ = ["METHODS", "MethodInfo", "build_method", "register_method", "resolve_adapter_config"]
