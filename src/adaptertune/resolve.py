"""Every value a run decides, decided once: a :class:`ResolvedRun` is what trains, what ``config.yaml`` says
and what ``summary.json`` records; downstream code reads it and never decides again.

Resolution has two steps, because some values depend on the data:

1. :func:`resolve_run`, from the config and this machine: the method (its registry entry, its lr and weight
   decay, its options, no augmentation for cached features), the warm-up length, the seed a per-seed training
   subset is drawn with (``data.subset_seed``), the device and the precision (``auto`` never remains).
   :func:`resolve_config` is the part that does not depend on the machine.
2. :meth:`ResolvedRun.with_data`, from the built splits: the selection rule (the best validation epoch when
   there is a validation split, else the last) and ``data.batched`` (``auto`` -> ``on``/``off``).

Both are idempotent: a resolved config resolves to itself, so a run started from a saved ``config.yaml``
trains exactly as the run that wrote it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from .backbones import BuiltBackbone, create_backbone
from .config import RUN_KEYS, RunConfig, TrainConfig
from .config_keys import suggest_keys
from .engine.device import resolve_device, resolve_precision
from .engine.distributed import current
from .engine.optim import check_optimizer
from .engine.stopping import Selection, check_selection
from .errors import ConfigError
from .methods import METHODS, Method
from .methods.registry import resolve_options

__all__ = [
    "ResolvedRun",
    "default_warmup_epochs",
    "resolve_config",
    "resolve_run",
    "resolve_train_config",
    "subset_draw_seed",
]


@dataclass(frozen=True)
class ResolvedRun:
    """A run with every value decided (:func:`resolve_run`, then :meth:`with_data`).

    Attributes:
        config: every default filled: the config that trains and that ``config.yaml`` holds (``data.batched``
            ``on``/``off`` once the data is bound).
        method: the registry entry of ``config.method``.
        device: this process's device (under torchrun: its rank's GPU).
        selection: the selection rule the run uses and records; None until :meth:`with_data`.
    """

    config: RunConfig
    method: Method
    device: torch.device
    selection: Selection | None = None

    @property
    def options(self) -> Any:
        """The method's options object (None: the method takes none)."""
        return self.config.method_options

    @property
    def precision(self) -> str:
        """fp32, bf16 or fp16."""
        return self.config.train.precision

    @property
    def warmup_epochs(self) -> float:
        return self.config.train.warmup_epochs

    def build_model(self, num_classes: int) -> tuple[BuiltBackbone, nn.Module]:
        """The run's model: the backbone with a fresh ``num_classes`` head, then the method applied (seeded by
        ``train.seed``, as training, evaluation and every rebuild of the run's model do)."""
        built = create_backbone(self.config.backbone, num_classes=num_classes, seed=self.config.train.seed)
        torch.manual_seed(self.config.train.seed)  # adapter init (W_down), dropout
        return built, self.method.build(built.model, self.options)

    def with_data(self, has_val: bool, batched: str) -> ResolvedRun:
        """The run with what its built splits decide: the selection rule (``has_val``: the splits have a
        validation set) and ``data.batched`` as the loaders decided it (``on`` or ``off``).

        Raises:
            ConfigError: ``train.early_stop`` without a validation split.
        """
        if batched not in ("on", "off"):
            raise ValueError(f"data.batched must be decided (on or off) here, got {batched!r}")
        selection = Selection.BEST_VAL if has_val else Selection.LAST_EPOCH
        check_selection(selection, has_val, self.config.train.early_stop)
        data = dataclasses.replace(self.config.data, batched=batched)
        return dataclasses.replace(self, config=dataclasses.replace(self.config, data=data), selection=selection)


def resolve_run(cfg: RunConfig) -> ResolvedRun:
    """Resolve ``cfg`` for this machine and process (see the module doc); the data is bound later.

    Raises:
        UnknownNameError: no such method.
        ConfigError: an option the method does not take, a bad value; a CUDA device asked for where there is none.
    """
    cfg, method = _resolve(cfg)
    device = resolve_device(cfg.train.device)
    if current().enabled and device.type == "cuda":
        device = torch.device("cuda", torch.cuda.current_device())  # set per rank by init_distributed
    cfg = dataclasses.replace(cfg, train=resolve_train_config(cfg.train, device))
    return ResolvedRun(cfg, method, device)


def resolve_config(cfg: RunConfig) -> RunConfig:
    """Fill the method's defaults (lr, weight decay, adapter options), check its options and fill the warm-up.

    Raises:
        UnknownNameError: no such method.
        ConfigError: an option the method does not take, or a bad value.
    """
    return _resolve(cfg)[0]


def resolve_train_config(train: TrainConfig, device: torch.device | None = None) -> TrainConfig:
    """``train`` with the warm-up length, the device and the precision decided (``device``: where it runs;
    None: ``train.device`` on this machine). ``lr`` and ``weight_decay`` stay as given: their defaults are the
    method's (:func:`resolve_config`). This is how a caller of :func:`~adaptertune.engine.loop.fit` gets the
    resolved TrainConfig it needs.

    Raises:
        ConfigError: a CUDA device asked for where there is none.
    """
    device = device if device is not None else resolve_device(train.device)
    return dataclasses.replace(
        train,
        warmup_epochs=_warmup_epochs(train),
        device=device.type if train.device == "auto" else train.device,
        precision=resolve_precision(train.precision, device),
    )


def _resolve(cfg: RunConfig) -> tuple[RunConfig, Method]:
    method = METHODS.get(cfg.method)
    _check_sections(cfg.options)
    options = resolve_options(cfg.method, cfg.options)  # the method's options dataclass (or None)
    d = {k: v for k, v in cfg.to_dict().items() if k in RUN_KEYS}
    if options is not None:  # config.yaml records the selected method's section alone (`lora: {...}`)
        d[cfg.method] = options
    for key in ("lr", "weight_decay"):
        if d["train"][key] is None:
            d["train"][key] = method.defaults[key]
    if method.cached_features:  # features are computed once: no augmentation by definition of the method
        d["data"]["augment"] = False
        if d["data"]["mixup"] or d["data"]["cutmix"]:
            raise ConfigError(
                f"Method '{cfg.method}' trains on cached features: `data.mixup` and `data.cutmix` must be 0."
            )
    check_optimizer(d["train"]["optimizer"])
    d["data"]["subset_seed"] = _subset_seed(cfg)
    d["train"]["warmup_epochs"] = _warmup_epochs(cfg.train)
    return RunConfig.from_dict(d), method


def _check_sections(sections: dict[str, Any]) -> None:
    """Every options section names a registered method (a typo'd top-level key gets the closest names)."""
    for name in sections:
        if name not in METHODS:
            valid = [*RUN_KEYS, *(m.name for m in METHODS if m.options)]
            close = suggest_keys(name, valid)
            hint = f" Did you mean {' or '.join(f'`{c}`' for c in close)}?" if close else ""
            raise ConfigError(
                f"Unknown config key '{name}': neither a run config key nor a method.{hint} Valid top-level keys: "
                f"{', '.join(RUN_KEYS)} and the options sections {', '.join(valid[len(RUN_KEYS) :])}."
            )


def subset_draw_seed(split_seed: int, train_seed: int) -> int:
    """The seed of a run's training subset and validation set under ``data.subset_per_seed``: one 32-bit word
    of numpy's ``SeedSequence((split_seed, train_seed))``, so each pair gets its own independent stream."""
    return int(np.random.SeedSequence((split_seed, train_seed)).generate_state(1)[0])


def _subset_seed(cfg: RunConfig) -> int | None:
    """``data.subset_seed`` for ``cfg``: derived from its seeds under ``subset_per_seed`` (a recorded value must
    be that one: a config.yaml given another ``train.seed`` would otherwise train on another run's subset)."""
    if not cfg.data.subset_per_seed:
        return None
    seed = subset_draw_seed(cfg.data.split_seed, cfg.train.seed)
    if cfg.data.subset_seed not in (None, seed):
        raise ConfigError(
            f"`data.subset_seed` {cfg.data.subset_seed} is not the seed of `data.split_seed` {cfg.data.split_seed} "
            f"and `train.seed` {cfg.train.seed} ({seed}); unset it, resolution derives it."
        )
    return seed


def default_warmup_epochs(epochs: int) -> float:
    """Linear warm-up length when none is set: min(5, 10% of the epochs)."""
    return min(5.0, 0.1 * epochs)


def _warmup_epochs(train: TrainConfig) -> float:
    """``train.warmup_epochs``, or the default for ``train.epochs`` (:func:`default_warmup_epochs`)."""
    return train.warmup_epochs if train.warmup_epochs is not None else default_warmup_epochs(train.epochs)
