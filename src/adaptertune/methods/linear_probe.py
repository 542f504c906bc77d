"""Linear probe on cached features: the head-only method, with the frozen backbone run once per image.

The built model is the ``head`` model (its forward takes images, for ``eval``/``predict``). Training goes
through :meth:`LinearProbeMethod.prepare_fit`: features of the train/val/test views are computed once with
the eval transform (no augmentation), and the head trains for many epochs on those tensors.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable

import torch
from torch import nn

from ..engine import FitResult
from ..engine.distributed import current
from ..engine.features import FeatureHead, extract_features, feature_loader, train_mode_layers
from ..errors import ConfigError
from ..vit import head_parameter_names
from .flops import StepFlops, ViTGeometry
from .head import HeadMethod
from .registry import FitContext, FitInputs, register_method

__all__ = ["CachedFitInputs", "LinearProbeMethod", "cached_feature_fit_inputs"]

_logger = logging.getLogger(__name__)


class CachedFitInputs:
    """What ``fit`` trains on for a cached-features method, and how to map its results back."""

    def __init__(
        self, model: nn.Module, loaders: tuple, names: dict[str, str], skipped: tuple[int, int, int], seconds: float
    ):
        self.model, self.loaders, self.names, self.skipped, self.seconds = model, loaders, names, skipped, seconds

    def full_state(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """``fit``'s best state (names of the head module) under the full model's parameter names."""
        return {self.names[k]: v for k, v in state.items()}

    def full_result(self, result: FitResult) -> FitResult:
        """``fit``'s result with full-model tensor names; the feature pass counts as training time."""
        seconds = result.train_seconds + self.seconds
        return dataclasses.replace(
            result,
            best_state=self.full_state(result.best_state),
            train_seconds=seconds,
            images_per_second=result.images_per_second * result.train_seconds / max(seconds, 1e-9),
            skipped_images=result.skipped_images + self.skipped[0],  # corrupt images of the (train, val, test) pass
            test={**result.test, "skipped": self.skipped[2]},
            test_last={**result.test_last, "skipped": self.skipped[2]},
        )


def cached_feature_fit_inputs(
    model: nn.Module,
    loaders: tuple[Iterable, Iterable | None, Iterable],
    batch_size: int,
    seed: int,
    device: torch.device,
    precision: str = "fp32",
) -> CachedFitInputs:
    """Extract features once over the (unaugmented, dataset-order) image ``loaders`` (train, val, test).

    Returns the head (with the model's ``head_drop``) and loaders of the features; the train one's seeded
    shuffle is the order of an image loader of the same length and seed, and under torchrun each rank's
    loaders read that rank's shard, as the image loaders do.

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
    dist = current()
    feature_loaders, skipped, seconds = [], [0, 0, 0], 0.0
    for i, loader in enumerate(loaders):
        if loader is None:
            feature_loaders.append(None)
            continue
        x, y, s, t = extract_features(model, loader, device, precision)
        skipped[i], seconds = s, seconds + t
        feature_loaders.append(feature_loader(x, y, batch_size, i == 0, seed, dist.rank, dist.world_size))
    n = sum(len(lo.dataset) for lo in feature_loaders if lo)
    _logger.info("cached features of %d images in %.1f s", n, seconds)
    return CachedFitInputs(fit_model, tuple(feature_loaders), names, tuple(skipped), seconds)


class LinearProbeMethod(HeadMethod):
    """The head model; ``fit`` trains its classifier on features computed once (so: no augmentation)."""

    name = "linear-probe-cached"
    description = "head-only on features computed once by the frozen backbone (no augmentation; fast)"
    cached_features = True

    def step_flops(self, geom: ViTGeometry, options: None) -> StepFlops | None:
        return None  # a step is the head on cached features, not a pass through the backbone

    def prepare_fit(self, model: nn.Module, loaders: tuple, ctx: FitContext) -> FitInputs:
        plain = tuple(None if view is None else ctx.loader(view) for view in ctx.views)  # one pass, dataset order
        cached = cached_feature_fit_inputs(model, plain, ctx.batch_size, ctx.seed, ctx.device, ctx.precision)
        return FitInputs(cached.model, cached.loaders, cached.full_result)


register_method(LinearProbeMethod())
