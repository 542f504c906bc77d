"""Linear probe on cached features: the head-only method, with the frozen backbone run once per image.

The built model is the ``head`` model (its forward takes images, for ``eval``/``predict``). Training goes
through :meth:`LinearProbeMethod.prepare_fit`: features of the train/val/test views are computed once with
the eval transform (no augmentation), and the head trains for many epochs on those tensors.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

import torch
from torch import nn

from ..engine.cached import cache_views
from ..engine.distributed import current
from ..engine.features import FeatureHead, extract_features, train_mode_layers
from ..errors import ConfigError
from ..vit import head_parameter_names
from .fit import FitContext, FitInputs
from .flops import StepFlops, ViTGeometry
from .head import HeadMethod
from .registry import register_method

__all__ = ["LinearProbeMethod", "cached_feature_fit_inputs"]

_logger = logging.getLogger(__name__)


def cached_feature_fit_inputs(
    model: nn.Module,
    loaders: tuple[Iterable, Iterable | None, Iterable],
    batch_size: int,
    seed: int,
    device: torch.device,
    precision: str = "fp32",
) -> FitInputs:
    """Extract features once over the (unaugmented, dataset-order) image ``loaders`` (train, val, test).

    Returns the head (with the model's ``head_drop``), loaders of the features and the map of ``fit``'s
    result back to the full model's tensor names (:mod:`adaptertune.engine.cached`); the train loader's
    seeded shuffle is the order of an image loader of the same length and seed, and under torchrun each
    rank's loaders read that rank's shard, as the image loaders do.

    Raises:
        ConfigError: the classifier is not the model's only head, or the backbone holds layers that act
            differently in training (dropout, drop-path, batch norm): cached features would not be what
            head-only training sees.
    """
    head, drop = model.get_classifier(), getattr(model, "head_drop", None)
    fit_model = FeatureHead(head, drop)
    full = {id(p): n for n, p in model.named_parameters()}
    names = {n: full[id(p)] for n, p in fit_model.named_parameters()}
    if set(names.values()) != set(head_parameter_names(model)):
        raise ConfigError(f"Cannot train the classifier of {type(model).__name__} on cached features.")
    if layers := train_mode_layers(model, skip=tuple(m for m in (head, drop) if m is not None)):
        raise ConfigError(
            f"Cached features are computed once in eval mode, but the backbone's {', '.join(layers[:3])} "
            f"({len(layers)} layers) act differently in training; set backbone.args drop_path_rate / "
            "attn_drop_rate / proj_drop_rate / pos_drop_rate / patch_drop_rate to 0, or use --method head."
        )
    cached = cache_views(
        lambda loader: extract_features(model, loader, device, precision), loaders, batch_size, seed, current()
    )
    _logger.info("cached features of %d images in %.1f s", cached.images, cached.seconds)
    return FitInputs(fit_model, cached.loaders, lambda result: cached.result(result, names.__getitem__))


class LinearProbeMethod(HeadMethod):
    """The head model; ``fit`` trains its classifier on features computed once (so: no augmentation)."""

    name = "linear-probe-cached"
    description = "head-only on features computed once by the frozen backbone (no augmentation; fast)"
    cached_features = True

    def step_flops(self, geom: ViTGeometry, options: None) -> StepFlops | None:
        return None  # a step is the head on cached features, not a pass through the backbone

    def prepare_fit(self, model: nn.Module, loaders: tuple, ctx: FitContext) -> FitInputs:
        plain = tuple(None if view is None else ctx.loader(view) for view in ctx.views)  # one pass, dataset order
        return cached_feature_fit_inputs(model, plain, ctx.batch_size, ctx.seed, ctx.device, ctx.precision)


register_method(LinearProbeMethod())
