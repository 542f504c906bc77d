"""Every default of a run filled in one place; the result is what trains and what ``config.yaml`` says.

:func:`resolve_config` fills what the method decides (its lr and weight decay, its options, no augmentation
for cached features) and the warm-up length; :func:`resolve_run_config` also fixes what the machine decides
(``train.device: auto`` -> ``cpu``/``cuda``, ``train.precision: auto`` -> ``fp32``/``bf16``/``fp16``).
Both are idempotent: a resolved config resolves to itself, so a run started from a saved ``config.yaml``
trains exactly as the run that wrote it.
"""

from __future__ import annotations

import dataclasses

from .config import RunConfig
from .engine.device import resolve_device, resolve_precision
from .engine.optim import default_warmup_epochs
from .engine.recipes import check_optimizer
from .errors import ConfigError
from .methods import METHODS, resolve_adapter_config

__all__ = ["default_warmup_epochs", "resolve_config", "resolve_run_config"]


def resolve_config(cfg: RunConfig) -> RunConfig:
    """Fill the method's defaults (lr, weight decay, adapter options), check its options and fill the warm-up.

    Raises:
        UnknownNameError: no such method.
        ConfigError: an option the method does not take, or a bad value.
    """
    info = METHODS.get(cfg.method)
    d = cfg.to_dict()
    d["adapter"] = resolve_adapter_config(cfg.method, cfg.adapter)  # the method's options dataclass (or None)
    for key in ("lr", "weight_decay"):
        if d["train"][key] is None:
            d["train"][key] = info.defaults[key]
    if info.cached_features:  # features are computed once: no augmentation by definition of the method
        d["data"]["augment"] = False
        if d["data"]["mixup"] or d["data"]["cutmix"]:
            raise ConfigError(
                f"Method '{cfg.method}' trains on cached features: `data.mixup` and `data.cutmix` must be 0."
            )
    check_optimizer(d["train"]["optimizer"])
    if d["train"]["warmup_epochs"] is None:
        d["train"]["warmup_epochs"] = default_warmup_epochs(d["train"]["epochs"])
    return RunConfig.from_dict(d)


def resolve_run_config(cfg: RunConfig) -> RunConfig:
    """:func:`resolve_config`, then the device and precision of this machine (``auto`` never remains).

    Raises:
        ConfigError: as :func:`resolve_config`; a CUDA device asked for where there is none.
    """
    cfg = resolve_config(cfg)
    device = resolve_device(cfg.train.device)
    train = dataclasses.replace(
        cfg.train,
        device=device.type if cfg.train.device == "auto" else cfg.train.device,
        precision=resolve_precision(cfg.train.precision, device),
    )
    return dataclasses.replace(cfg, train=train)
