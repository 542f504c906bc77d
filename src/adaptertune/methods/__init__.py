"""Methods registry: ``head``, ``full``, ``adapter``, ``parallel``, ``lora``, ``bitfit``, ``linear-probe-cached``.

A method is one :class:`Method` subclass in one file, registered on import (add the file's import here).
"""

from . import basic  # noqa: E402,F401,I001  (registers head, full, adapter)
from . import bitfit, linear_probe, lora, parallel  # noqa: E402,F401  (register the baselines)
from .registry import (
    METHODS,
    FitContext,
    FitInputs,
    Method,
    build_method,
    option_defaults,
    register_method,
    resolve_adapter_config,
    unregister_method,
)

__all__ = [
    "METHODS",
    "FitContext",
    "FitInputs",
    "Method",
    "build_method",
    "option_defaults",
    "register_method",
    "resolve_adapter_config",
    "unregister_method",
]
