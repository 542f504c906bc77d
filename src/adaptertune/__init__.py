"""adaptertune: zero-initialized residual low-rank adapters for frozen Vision Transformers."""

__version__ = "0.1.0"

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .backbones import BACKBONES, create_backbone
    from .config import BackboneConfig, DataConfig, RunConfig, TrainConfig
    from .data import DATASETS
    from .errors import (
        AdapterTuneError,
        CheckpointError,
        ConfigError,
        DataError,
        MissingExtraError,
        NonFiniteLossError,
        UnknownNameError,
        WeightsUnavailableError,
    )
    from .methods import METHODS, build_method
    from .methods.adapter import (
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
    from .runs import RunSummary, evaluate_run, load_run, predict, run
    from .vit import ParamCount, trainable_parameters

# the public names, by the module that defines them; each is imported on first use (PEP 562), so
# `import adaptertune` and its torch-free modules (errors, config, config_keys, the CLI's parser) load without
# torch. The TYPE_CHECKING imports above say the same for type checkers (tests/test_startup.py compares them).
_EXPORTS: dict[str, tuple[str, ...]] = {
    ".methods.adapter": (
        "Adapter",
        "AdapterConfig",
        "adapter_param_count",
        "adapter_state_dict",
        "add_adapters",
        "disable_adapters",
        "list_adapter_sets",
        "load_adapter_state_dict",
        "remove_adapters",
        "set_active",
    ),
    ".backbones": ("BACKBONES", "create_backbone"),
    ".config": ("BackboneConfig", "DataConfig", "RunConfig", "TrainConfig"),
    ".data": ("DATASETS",),
    ".errors": (
        "AdapterTuneError",
        "CheckpointError",
        "ConfigError",
        "DataError",
        "MissingExtraError",
        "NonFiniteLossError",
        "UnknownNameError",
        "WeightsUnavailableError",
    ),
    ".methods": ("METHODS", "build_method"),
    ".runs": ("RunSummary", "evaluate_run", "load_run", "predict", "run"),
    ".vit": ("ParamCount", "trainable_parameters"),
}
_MODULE_OF = {name: module for module, names in _EXPORTS.items() for name in names}

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
    "MissingExtraError",
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


def __getattr__(name: str) -> Any:
    if name not in _MODULE_OF:
        raise AttributeError(f"module 'adaptertune' has no attribute '{name}'")
    value = getattr(importlib.import_module(_MODULE_OF[name], __name__), name)
    globals()[name] = value  # looked up once
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_MODULE_OF})
