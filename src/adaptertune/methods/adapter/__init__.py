"""AdapterTune, the paper's method (``--method adapter``): zero-init residual low-rank adapters on a frozen ViT.

* :mod:`.options`: ``AdapterConfig`` (the ``adapter.*`` options), the output-scale rule, the accepted values.
* :mod:`.layer`: the ``Adapter`` module, its fused residual autograd function, the block slot that runs it.
* :mod:`.model`: attach / switch / remove adapter sets on a backbone, the parameter-count formula, state dicts.
* :mod:`.nested`: nested ranks (``adapter.nested``): the per-step rank draw, truncation to a plain rank.
* :mod:`.method`: the registered ``Method`` (build, multi-task attach/activate/detach, FLOPs).
"""

from .layer import Adapter, AdapterSlot
from .method import AdapterMethod
from .model import (
    adapted_blocks,
    adapter_modules,
    adapter_param_count,
    adapter_state_dict,
    add_adapters,
    attach_adapter_set,
    disable_adapters,
    list_adapter_sets,
    load_adapter_state_dict,
    remove_adapters,
    set_active,
    set_active_rank,
)
from .options import ADAPTER_ACTS, ADAPTER_INITS, ADAPTER_SCALINGS, AdapterConfig, adapter_scale

__all__ = [
    "ADAPTER_ACTS",
    "ADAPTER_INITS",
    "ADAPTER_SCALINGS",
    "Adapter",
    "AdapterConfig",
    "AdapterMethod",
    "AdapterSlot",
    "adapted_blocks",
    "adapter_modules",
    "adapter_param_count",
    "adapter_scale",
    "adapter_state_dict",
    "add_adapters",
    "attach_adapter_set",
    "disable_adapters",
    "list_adapter_sets",
    "load_adapter_state_dict",
    "remove_adapters",
    "set_active",
    "set_active_rank",
]
