"""Validated dataclass configs.

``RunConfig`` nests one dataclass per concern. Each dataclass checks its own fields once, in
``__post_init__``, and raises :class:`ConfigError` naming the field, the bad value and what is accepted.
``RunConfig.from_dict`` rejects unknown keys (listing the valid ones); ``to_dict`` round-trips. Dotted keys
(``train.lr``) and ``key=value`` overrides: :mod:`adaptertune.config_keys`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .config_checks import (
    _as_bool,
    _as_choice,
    _as_float,
    _as_int,
    _check_cv,
    _check_recipe,
    _optional,
)
from .errors import ConfigError

__all__ = [
    "AUG_PRESETS",
    "BATCHED_MODES",
    "LEGACY_OPTIONS",
    "PRECISIONS",
    "RESIZE_MODES",
    "RUN_KEYS",
    "BackboneConfig",
    "DataConfig",
    "RunConfig",
    "TrainConfig",
    "load_yaml",
    "merge_dicts",
]

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
RESIZE_MODES = ("crop", "squash")
BATCHED_MODES = ("auto", "on", "off")
AUG_PRESETS = ("none", "basic", "randaug")  # basic: random-resized-crop + flip; randaug: + RandAugment, erasing


# ---------------------------------------------------------------- dataclasses
@dataclass
class BackboneConfig:
    """Which pretrained ViT to build.

    Args:
        name: a registered backbone or any timm ViT-family model name.
        pretrained: load pretrained weights; if they cannot be had the run stops (never random weights).
        weights: a local ``.safetensors``/``.pth`` file with the backbone's weights (implies pretrained).
        args: extra model kwargs passed to timm (``img_size``, ``patch_size``, ``drop_path_rate``, ...).
    """

    name: str = "vit_small_patch16_224"
    pretrained: bool = True
    weights: str | None = None
    args: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ConfigError(f"`backbone.name` must be a model name, got {self.name!r}.")
        self.pretrained = _as_bool("backbone.pretrained", self.pretrained)
        self.weights = None if self.weights in (None, "", "none") else str(self.weights)
        if not isinstance(self.args, dict):
            raise ConfigError(f"`backbone.args` must be a mapping of model kwargs, got {self.args!r}.")


@dataclass
class DataConfig:
    """Dataset, split and input pipeline.

    Args:
        name: registered dataset (``imagefolder``, ...).
        root: dataset folder or file.
        val_fraction: share of the training split held out for validation (stratified); with ``subset``, the
            share of the subset, drawn from the training images outside it.
        val_subset: validation size in images, replacing ``val_fraction`` (None: use ``val_fraction``).
        split_seed: seed of the train/val split; independent of the training seed.
        subset: use a fixed stratified subset of N training images.
        subset_per_seed: draw the subset and its validation set with a seed derived from (``split_seed``,
            ``train.seed``), so each training seed trains and validates on its own draw; the test set stays the
            one ``split_seed`` fixes, so seeds are paired per test image. Needs ``subset``; not with ``cv_folds``.
        subset_seed: the seed the subset and its validation set were drawn with under ``subset_per_seed``:
            decided by resolution (:func:`adaptertune.resolve.subset_draw_seed`) and recorded in config.yaml;
            leave it unset.
        test_subset: use a fixed stratified subset of N test images.
        augment: train with the ``aug`` preset; off (the default) = the eval transform, as the PETL benchmarks
            (VTAB-1k) train; measured in benchmarks/augment.py, where random-resized-crop + flip cost points
            on every offline task (README, "Augmentation").
        num_workers: DataLoader worker processes per process (None: the machine's cores / local processes).
        strict: a corrupt image is an error (default: skipped and counted in the summary).
        download: let loaders that can download do so (needs internet).
        split: which of the dataset's published splits to use (e.g. ``vtab-1k``: ``train800val200`` -> test,
            or ``train800`` with ``val200`` for tuning); None: the dataset's default. Datasets with one split
            refuse any value.
        resize: ``crop``: resize to ``size / crop_pct`` then center crop (timm's eval transform);
            ``squash``: resize straight to ``size x size``, no crop (the VTAB-1k protocol).
        cv_folds: k-fold cross-validation: the dataset's labelled images (train, test and any official val
            split, pooled) are cut into this many stratified folds fixed by ``split_seed`` (None: no CV).
        cv_fold: which fold (0-based) is the test set; validation is carved from the other folds.
        batched: ``auto``: array datasets (held in memory) are transformed in batches on the training device,
            with the per-image path's crops and flips (pixels within two uint8 levels of PIL's); ``on``: that or
            an error; ``off``: every image through PIL in DataLoader workers.
        aug: training augmentation preset (with ``augment`` on): ``basic`` (random-resized-crop + flip),
            ``randaug`` (timm ``create_transform``: + ``rand-m9-mstd0.5`` RandAugment, random erasing p=0.25)
            or ``none`` (the eval transform).
        hflip: the preset may flip images horizontally (p=0.5); false for classes a mirror image changes
            (digits, text, left/right): no preset then ever flips, on the per-image or the batched path.
        crop_scale: the smallest share of the image area a random-resized crop keeps (range
            ``(crop_scale, 1)``; torchvision's and timm's 0.08).
        mixup: timm ``Mixup`` alpha for mixup (0: off); the loss becomes soft-target cross-entropy.
        cutmix: timm ``Mixup`` alpha for cutmix (0: off); with mixup too, each batch uses one of the two.
        cache: a folder for a pre-resized copy of a dataset read from image files: each image is decoded and
            resized once (the eval transform's first resize, kept as a centred square) into a uint8 array
            there, memory-mapped by later runs and transformed in batches on the device (None: decode every
            image every epoch). Training crops then sample inside that square.
    """

    name: str = "imagefolder"
    root: str | None = None
    val_fraction: float = 0.1
    val_subset: int | None = None
    split_seed: int = 0
    subset: int | None = None
    subset_per_seed: bool = False
    subset_seed: int | None = None
    test_subset: int | None = None
    augment: bool = False
    num_workers: int | None = None
    strict: bool = False
    download: bool = False
    split: str | None = None
    resize: str = "crop"
    cv_folds: int | None = None
    cv_fold: int | None = None
    batched: str = "auto"
    aug: str = "basic"
    hflip: bool = True
    crop_scale: float = 0.08
    mixup: float = 0.0
    cutmix: float = 0.0
    cache: str | None = None

    def __post_init__(self) -> None:
        self.root = None if self.root in (None, "") else str(self.root)
        self.cache = None if self.cache in (None, "") else str(self.cache)
        if self.split is not None and (not isinstance(self.split, str) or not self.split.strip()):
            raise ConfigError(f"`data.split` must be a split name of the dataset (or unset), got {self.split!r}.")
        self.resize = _as_choice("data.resize", self.resize, RESIZE_MODES)
        self.batched = _as_choice("data.batched", self.batched, BATCHED_MODES)
        self.val_fraction = _as_float("data.val_fraction", self.val_fraction, minimum=0.0)
        if self.val_fraction >= 1:
            raise ConfigError(f"`data.val_fraction` must be in [0, 1), got {self.val_fraction:g}.")
        self.val_subset = _optional(_as_int, "data.val_subset", self.val_subset, minimum=1)
        self.split_seed = _as_int("data.split_seed", self.split_seed, minimum=0)
        self.subset = _optional(_as_int, "data.subset", self.subset, minimum=1)
        self.test_subset = _optional(_as_int, "data.test_subset", self.test_subset, minimum=1)
        self.augment = _as_bool("data.augment", self.augment)
        self.num_workers = _optional(_as_int, "data.num_workers", self.num_workers, minimum=0)
        self.strict = _as_bool("data.strict", self.strict)
        self.download = _as_bool("data.download", self.download)
        self.cv_folds, self.cv_fold = _check_cv(
            self.cv_folds, self.cv_fold, subset=self.subset, test_subset=self.test_subset, split=self.split
        )
        self.aug = _as_choice("data.aug", self.aug, AUG_PRESETS)
        self.hflip = _as_bool("data.hflip", self.hflip)
        self.crop_scale = _as_float("data.crop_scale", self.crop_scale, minimum=0.0)
        if not 0 < self.crop_scale <= 1:
            raise ConfigError(f"`data.crop_scale` must be in (0, 1], got {self.crop_scale:g}.")
        self.mixup = _as_float("data.mixup", self.mixup, minimum=0.0)
        self.cutmix = _as_float("data.cutmix", self.cutmix, minimum=0.0)
        self.subset_per_seed = _as_bool("data.subset_per_seed", self.subset_per_seed)
        self.subset_seed = _optional(_as_int, "data.subset_seed", self.subset_seed, minimum=0)
        if self.subset_per_seed and (self.subset is None or self.cv_folds is not None):
            raise ConfigError(
                "`data.subset_per_seed` draws the training subset per seed: it needs `data.subset` and no "
                f"`data.cv_folds`, got subset {self.subset} and cv_folds {self.cv_folds}."
            )
        if self.subset_seed is not None and not self.subset_per_seed:
            raise ConfigError(f"`data.subset_seed` {self.subset_seed} is set by `data.subset_per_seed`; unset it.")


@dataclass
class TrainConfig:
    """Optimization. ``None`` for lr / weight_decay means "the method's default".

    Args:
        epochs: training epochs.
        batch_size: images per step.
        lr: peak AdamW learning rate (None: the method's default).
        weight_decay: AdamW weight decay (None: the method's default).
        decay_all: decay every parameter (the paper's code); default decays weights only, not biases,
            norms, tokens or position embeddings.
        warmup_epochs: linear warm-up length (None: min(5, 10% of epochs)).
        min_lr: learning rate at the end of the cosine.
        grad_clip: max gradient norm (None: no clipping).
        label_smoothing: cross-entropy label smoothing.
        seed: training seed (init of new modules, data order, augmentation).
        precision: auto (fp32 on CPU, bf16 on CUDA), fp32, bf16 or fp16.
        device: auto, cpu, cuda or cuda:N.
        checkpoint_every_steps: also write the resume checkpoint every N optimizer steps (None: only at
            the end of each epoch).
        compile: run the training forward through ``torch.compile`` (needs a C++ compiler on CPU).
        tensorboard: also log the loss and learning rate of every step and every epoch's metrics as
            TensorBoard events in ``<out_dir>/tensorboard`` (needs ``pip install 'adaptertune[tensorboard]'``).
        log_every_steps: read the step losses from the device (and check them for NaN/inf) every N steps,
            at checkpoints and at epoch ends; between these points a step never waits for the device.
        dist_timeout_minutes: under torchrun, how long a collective waits for the other processes before
            the run fails.
        cache_prefix: when the trained parts start at block k > 0 (placement ``last:4``, ...) and
            ``data.augment`` is off, run the frozen patch embedding and blocks before k once per image and
            train the rest on those cached tokens every epoch (same losses; memory N x tokens x width floats).
        early_stop: patience in epochs: stop once validation accuracy has not improved (by more than
            ``early_stop_min_delta``) for this many epochs; the best-validation model is tested, and the
            learning-rate schedule still spans ``epochs``. Needs a validation split. None: train all epochs.
        early_stop_min_delta: the improvement in validation accuracy (points) that resets the patience.
        optimizer: a timm optimizer name (``timm.optim.create_optimizer_v2``); ``adamw`` is the two-group AdamW.
        layer_decay: layer-wise lr decay (timm ``param_groups_layer_decay``: block i of L gets
            ``lr * layer_decay ** (L + 1 - i)``); None: off. Meant for full fine-tuning.
        ema: decay of an exponential moving average of the trainable tensors, updated every step (None: off).
        ema_eval: validate, select and test the EMA tensors instead of the live ones (needs ``ema``).
        accum_steps: run each batch's forward/backward in N micro-batches (one optimizer step per batch):
            the same update at 1/N of the activation memory.
        grad_checkpointing: recompute the blocks' activations in backward (timm ``set_grad_checkpointing``).
    """

    epochs: int = 50
    batch_size: int = 128
    lr: float | None = None
    weight_decay: float | None = None
    decay_all: bool = False
    warmup_epochs: float | None = None
    min_lr: float = 0.0
    grad_clip: float | None = 1.0
    label_smoothing: float = 0.0
    seed: int = 0
    precision: str = "auto"
    device: str = "auto"
    checkpoint_every_steps: int | None = None
    compile: bool = False
    tensorboard: bool = False
    log_every_steps: int = 50
    dist_timeout_minutes: float = 30.0
    cache_prefix: bool = False
    early_stop: int | None = None
    early_stop_min_delta: float = 0.0
    optimizer: str = "adamw"
    layer_decay: float | None = None
    ema: float | None = None
    ema_eval: bool = False
    accum_steps: int = 1
    grad_checkpointing: bool = False

    def __post_init__(self) -> None:
        self.cache_prefix = _as_bool("train.cache_prefix", self.cache_prefix)
        self.compile = _as_bool("train.compile", self.compile)
        self.tensorboard = _as_bool("train.tensorboard", self.tensorboard)
        self.epochs = _as_int("train.epochs", self.epochs, minimum=1)
        self.batch_size = _as_int("train.batch_size", self.batch_size, minimum=1)
        self.lr = _optional(_as_float, "train.lr", self.lr, minimum=0.0, exclusive=True)
        self.weight_decay = _optional(_as_float, "train.weight_decay", self.weight_decay, minimum=0.0)
        self.decay_all = _as_bool("train.decay_all", self.decay_all)
        self.warmup_epochs = _optional(_as_float, "train.warmup_epochs", self.warmup_epochs, minimum=0.0)
        self.min_lr = _as_float("train.min_lr", self.min_lr, minimum=0.0)
        self.grad_clip = _optional(_as_float, "train.grad_clip", self.grad_clip, minimum=0.0, exclusive=True)
        self.label_smoothing = _as_float("train.label_smoothing", self.label_smoothing, minimum=0.0)
        if self.label_smoothing >= 1:
            raise ConfigError(f"`train.label_smoothing` must be in [0, 1), got {self.label_smoothing:g}.")
        self.seed = _as_int("train.seed", self.seed, minimum=0)
        self.precision = _as_choice("train.precision", self.precision, PRECISIONS)
        if not isinstance(self.device, str) or not (
            self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:")
        ):
            raise ConfigError(f"`train.device` must be auto, cpu, cuda or cuda:N; got {self.device!r}.")
        self.checkpoint_every_steps = _optional(
            _as_int, "train.checkpoint_every_steps", self.checkpoint_every_steps, minimum=1
        )
        self.log_every_steps = _as_int("train.log_every_steps", self.log_every_steps, minimum=1)
        self.dist_timeout_minutes = _as_float(
            "train.dist_timeout_minutes", self.dist_timeout_minutes, minimum=0.0, exclusive=True
        )
        self.early_stop = _optional(_as_int, "train.early_stop", self.early_stop, minimum=1)
        self.early_stop_min_delta = _as_float("train.early_stop_min_delta", self.early_stop_min_delta, minimum=0.0)
        _check_recipe(self)


_SECTIONS: dict[str, type] = {
    "backbone": BackboneConfig,
    "data": DataConfig,
    "train": TrainConfig,
}


# RunConfig's own keys; every other top-level key of a run config is a method's options section.
RUN_KEYS = ("backbone", "data", "method", "train", "out_dir")
# `adapter:` is the selected method's options whatever the method (the form before per-method sections);
# for method ``adapter`` it is also that method's own section.
LEGACY_OPTIONS = "adapter"


@dataclass
class RunConfig:
    """Everything one training run needs.

    Args:
        backbone: which ViT to build.
        data: dataset, split and input pipeline.
        method: the transfer method: head, full, adapter, ... (adaptertune list methods).
        options: the method options sections, by method name (YAML: top-level ``lora: {rank: 8}``); the
            section ``adapter`` is also the selected method's options (the legacy form). Checked and reduced to
            the selected method's options object by :func:`adaptertune.resolve.resolve_config`.
        train: optimization.
        out_dir: the run folder to write.
    """

    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    data: DataConfig = field(default_factory=DataConfig)
    method: str = "adapter"
    options: dict[str, Any] = field(default_factory=dict)
    train: TrainConfig = field(default_factory=TrainConfig)
    out_dir: str = "runs/default"

    def __post_init__(self) -> None:
        for name, cls in _SECTIONS.items():
            value = getattr(self, name)
            if isinstance(value, dict):
                setattr(self, name, _section_from_dict(name, cls, value))
        if not isinstance(self.options, dict):
            raise ConfigError(f"`options` must map method names to their options, got {self.options!r}.")
        for name, value in self.options.items():
            if not (value is None or isinstance(value, dict) or dataclasses.is_dataclass(value)):
                raise ConfigError(f"`{name}` must be a mapping of method options, got {value!r}.")
        if not isinstance(self.method, str) or not self.method:
            raise ConfigError(f"`method` must be a method name, got {self.method!r}.")
        self.out_dir = str(self.out_dir)
        if self.train.cache_prefix and self.data.augment:
            raise ConfigError(
                "`train.cache_prefix` needs `data.augment` false: augmented images change every epoch, so the "
                "frozen blocks' output cannot be cached."
            )

    @property
    def method_options(self) -> Any:
        """The selected method's own section: after resolution its options object (None: it takes none)."""
        return self.options.get(self.method)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunConfig:
        """Build from nested dicts: RunConfig's own keys, and any other key holding a mapping (or nothing) as a
        method's options section (checked against the registered methods on resolution). Another unknown key
        raises ConfigError listing the valid keys."""
        if not isinstance(d, dict):
            raise ConfigError(f"A run config must be a mapping, got {type(d).__name__}.")
        own = {k: v for k, v in d.items() if k in RUN_KEYS}
        sections = {k: v for k, v in d.items() if k not in RUN_KEYS}
        for k, v in sections.items():
            if not isinstance(k, str) or not (v is None or isinstance(v, dict) or dataclasses.is_dataclass(v)):
                raise ConfigError(
                    f"Unknown config key '{k}'. Valid top-level keys: {', '.join(RUN_KEYS)}, and a method's "
                    "options section (e.g. `lora: {rank: 8}`)."
                )
        return cls(**own, options=sections)

    def to_dict(self) -> dict[str, Any]:
        """Nested dicts in the YAML form: each options section a top-level key after ``method``."""
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "options"}
        d = {k: dataclasses.asdict(v) if dataclasses.is_dataclass(v) else v for k, v in d.items()}
        sections = {k: dataclasses.asdict(v) if dataclasses.is_dataclass(v) else v for k, v in self.options.items()}
        return (
            {k: d[k] for k in ("backbone", "data", "method")}
            | sections
            | {"train": d["train"], "out_dir": d["out_dir"]}
        )


def _section_from_dict(section: str, cls: type, d: dict[str, Any]) -> Any:
    valid = [f.name for f in dataclasses.fields(cls)]
    unknown = [k for k in d if k not in valid]
    if unknown:
        raise ConfigError(
            f"Unknown config key '{section}.{unknown[0]}'. Valid keys of `{section}`: {', '.join(valid)}."
        )
    return cls(**d)


# ---------------------------------------------------------------- YAML
def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML config file into a dict (an empty file is an empty dict)."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"Config file '{path}' does not exist.")
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"Config file '{path}' is not valid YAML: {str(e).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"Config file '{path}' must hold a mapping of keys, got {type(data).__name__}.")
    return data


def merge_dicts(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """Recursive merge; values of ``update`` win. Returns a new dict."""
    out = dict(base)
    for k, v in update.items():
        out[k] = merge_dicts(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out
