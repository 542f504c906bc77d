"""adaptertune: zero-initialized residual low-rank adapters for frozen Vision Transformers."""

__version__ = "0.1.0"

from .backbones import BACKBONES, create_backbone  # noqa: E402
from .config import BackboneConfig, DataConfig, RunConfig, TrainConfig  # noqa: E402
from .data import DATASETS  # noqa: E402
from .errors import (  # noqa: E402
    AdapterTuneError,
    CheckpointError,
    ConfigError,
    DataError,
    NonFiniteLossError,
    UnknownNameError,
    WeightsUnavailableError,
)
from .methods import METHODS, build_method  # noqa: E402
from .methods.adapter import (  # noqa: E402
    Adapter,
    AdapterConfig,
    adapter_param_count,
    adapter_state_dict,
    add_adapters,
    disable_adapters,
    list_adapter_sets,
    load_adapter_state_dict,
    remove_adapters,
    set_active,
)
from .runs import RunSummary, evaluate_run, load_run, predict, run  # noqa: E402
from .vit import ParamCount, trainable_parameters  # noqa: E402

__all__ = [
    "BACKBONES",
    "DATASETS",
    "METHODS",
    "Adapter",
    "AdapterConfig",
    "AdapterTuneError",
    "BackboneConfig",
    "CheckpointError",
    "ConfigError",
    "DataConfig",
    "DataError",
    "NonFiniteLossError",
    "ParamCount",
    "RunConfig",
    "RunSummary",
    "TrainConfig",
    "UnknownNameError",
    "WeightsUnavailableError",
    "__version__",
    "adapter_param_count",
    "adapter_state_dict",
    "add_adapters",
    "build_method",
    "create_backbone",
    "disable_adapters",
    "evaluate_run",
    "list_adapter_sets",
    "load_adapter_state_dict",
    "load_run",
    "predict",
    "remove_adapters",
    "run",
    "set_active",
    "trainable_parameters",
]
