"""Transforms from the backbone's own data config (timm ``resolve_data_config``), never fixed ImageNet stats.

Training (the paper's augmentation): RandomResizedCrop + horizontal flip. Evaluation: resize to
``size / crop_pct`` then center crop (the paper's Resize(256) + CenterCrop(224) is crop_pct 0.875).
"""

from __future__ import annotations

import math
from typing import Any

from torchvision import transforms as T

__all__ = ["build_transforms"]


def build_transforms(data_config: dict[str, Any], augment: bool = True) -> tuple[T.Compose, T.Compose]:
    """(train transform, eval transform) for ``data_config`` (keys input_size, interpolation, mean, std, crop_pct)."""
    from timm.data.transforms import str_to_interp_mode

    size = int(data_config["input_size"][-1])
    interp = str_to_interp_mode(data_config.get("interpolation", "bicubic"))
    normalize = [T.ToTensor(), T.Normalize(mean=data_config["mean"], std=data_config["std"])]
    crop_pct = float(data_config.get("crop_pct", 0.875))
    eval_tf = T.Compose(
        [T.Resize(int(math.floor(size / crop_pct)), interpolation=interp), T.CenterCrop(size), *normalize]
    )
    if not augment:
        return eval_tf, eval_tf
    train_tf = T.Compose([T.RandomResizedCrop(size, interpolation=interp), T.RandomHorizontalFlip(), *normalize])
    return train_tf, eval_tf
