"""Methods registry: ``head``, ``full``, ``adapter``, ``parallel``, ``lora``, ``bitfit``, ``linear-probe-cached``.

A method is one :class:`Method` subclass in one file (or one package, as ``adapter/``: AdapterTune itself),
registered on import (add the file's import here). :mod:`.slots` is the base of the block slots that methods
with their own modules per task attach to a backbone.
"""

from . import head, full, adapter  # noqa: E402,F401,I001  (the paper's three, registered in this order)
from . import bitfit, linear_probe, lora, parallel  # noqa: E402,F401  (register the baselines)
from . import ssf  # noqa: E402,F401
from . import ln_tuning  # noqa: E402,F401
from . import difffit  # noqa: E402,F401
from . import selective  # noqa: E402,F401
from . import dora  # noqa: E402,F401
from . import adapter_plus  # noqa: E402,F401
from . import repadapter  # noqa: E402,F401
from . import fact  # noqa: E402,F401
from . import vpt  # noqa: E402,F401
from . import convpass  # noqa: E402,F401
from . import bottleneck  # noqa: E402,F401
from .fit import FitContext, FitInputs
from .registry import (
    METHODS,
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
