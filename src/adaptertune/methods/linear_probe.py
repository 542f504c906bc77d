"""Linear probe on cached features: the head-only method, with the frozen backbone run once per image.

The built model is the ``head`` model (its forward takes images, for ``eval``/``predict``). Training goes
through :func:`cached_feature_fit_inputs`: features of the train/val/test views are computed once with the
eval transform (no augmentation), and the head trains for many epochs on those tensors.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable

import torch
from torch import nn

from ..adapters import head_parameter_names
from ..config import AdapterConfig
from ..engine import FitResult
from ..engine.features import FeatureHead, extract_features, feature_loader
from ..engine.sampling import SeededAugmentView
from ..errors import ConfigError
from .basic import build_head
from .registry import MethodInfo, register_method

__all__ = ["CachedFitInputs", "cached_feature_fit_inputs"]

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
    train: Iterable,
    val: Iterable | None,
    test: Iterable,
    batch_size: int,
    seed: int,
    device: torch.device,
    precision: str = "fp32",
) -> CachedFitInputs:
    """Extract features once over the (unaugmented) image loaders; return the head and feature loaders."""
    head = model.get_classifier()
    fit_model = FeatureHead(head)
    full = {id(p): n for n, p in model.named_parameters()}
    names = {n: full[id(p)] for n, p in fit_model.named_parameters()}
    if set(names.values()) != set(head_parameter_names(model)):
        raise ConfigError(f"Cannot train the classifier of {type(model).__name__} on cached features.")
    loaders, skipped, seconds = [], [0, 0, 0], 0.0
    for i, loader in enumerate((train, val, test)):
        if loader is None:
            loaders.append(None)
            continue
        if isinstance(loader, torch.utils.data.DataLoader):  # dataset order, so that the seeded shuffle of
            loader = torch.utils.data.DataLoader(  # the feature loader matches the image loader's batches
                # the image view itself: one pass in dataset order (the training loader's view is keyed by epoch)
                loader.dataset.dataset if isinstance(loader.dataset, SeededAugmentView) else loader.dataset,
                batch_size=loader.batch_size,
                num_workers=loader.num_workers,
                collate_fn=loader.collate_fn,
            )
        x, y, s, t = extract_features(model, loader, device, precision)
        skipped[i], seconds = s, seconds + t
        loaders.append(feature_loader(x, y, batch_size, shuffle=i == 0, seed=seed))
    _logger.info("cached features of %d images in %.1f s", sum(len(lo.dataset) for lo in loaders if lo), seconds)
    return CachedFitInputs(fit_model, tuple(loaders), names, tuple(skipped), seconds)


def build_linear_probe(model: nn.Module, adapter: AdapterConfig | None) -> nn.Module:
    return build_head(model, adapter)


register_method(
    MethodInfo(
        "linear-probe-cached",
        "head-only on features computed once by the frozen backbone (no augmentation; fast)",
        build_linear_probe,
        defaults={"lr": 1e-3, "weight_decay": 0.05},
        cached_features=True,
    )
)
