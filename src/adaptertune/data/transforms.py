"""Transforms from the backbone's own data config (timm ``resolve_data_config``), never fixed ImageNet stats.

Training (the paper's augmentation, preset ``basic``): RandomResizedCrop + horizontal flip; preset ``randaug``:
timm's ``create_transform`` training pipeline with RandAugment ``rand-m9-mstd0.5`` and random erasing
(p=0.25), the DeiT/timm fine-tuning recipe; ``none``: the eval transform. Evaluation: resize to
``size / crop_pct`` then center crop (the paper's Resize(256) + CenterCrop(224) is crop_pct 0.875), or with
``resize="squash"`` straight to ``size x size`` with no crop (timm's ``crop_mode="squash"`` at crop_pct 1.0;
the VTAB-1k protocol).
"""

from __future__ import annotations

import math
from typing import Any

from torchvision import transforms as T

__all__ = ["build_transforms"]


def build_transforms(
    data_config: dict[str, Any], augment: bool = True, resize: str = "crop", aug: str = "basic"
) -> tuple[T.Compose, T.Compose]:
    """(train transform, eval transform) for ``data_config`` (keys input_size, interpolation, mean, std, crop_pct).

    ``resize``: ``crop`` (resize to size / crop_pct, center crop) or ``squash`` (resize to size x size).
    ``aug``: the training preset (``none``, ``basic``, ``randaug``); ``augment=False`` is ``none``.
    """
    from timm.data import create_transform
    from timm.data.transforms import str_to_interp_mode

    size = int(data_config["input_size"][-1])
    interp = str_to_interp_mode(data_config.get("interpolation", "bicubic"))
    normalize = [T.ToTensor(), T.Normalize(mean=data_config["mean"], std=data_config["std"])]
    crop_pct = float(data_config.get("crop_pct", 0.875))
    if resize == "squash":
        eval_tf = create_transform(
            (3, size, size),
            is_training=False,
            interpolation=data_config.get("interpolation", "bicubic"),
            mean=data_config["mean"],
            std=data_config["std"],
            crop_pct=1.0,
            crop_mode="squash",
        )
    elif resize == "crop":
        eval_tf = T.Compose(
            [T.Resize(int(math.floor(size / crop_pct)), interpolation=interp), T.CenterCrop(size), *normalize]
        )
    else:
        raise ValueError(f"resize must be 'crop' or 'squash', got {resize!r}")
    if not augment or aug == "none":
        return eval_tf, eval_tf
    if aug == "randaug":
        train_tf = create_transform(
            (3, size, size),
            is_training=True,
            auto_augment="rand-m9-mstd0.5",
            re_prob=0.25,
            interpolation=data_config.get("interpolation", "bicubic"),
            mean=data_config["mean"],
            std=data_config["std"],
        )
        return train_tf, eval_tf
    if aug != "basic":
        raise ValueError(f"aug must be none, basic or randaug, got {aug!r}")
    train_tf = T.Compose([T.RandomResizedCrop(size, interpolation=interp), T.RandomHorizontalFlip(), *normalize])
    return train_tf, eval_tf
