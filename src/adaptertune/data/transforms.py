"""Transforms from the backbone's own data config (timm ``resolve_data_config``), never fixed ImageNet stats.

Training (the paper's augmentation, preset ``basic``): RandomResizedCrop + horizontal flip; preset ``randaug``:
timm's ``create_transform`` training pipeline with RandAugment ``rand-m9-mstd0.5`` and random erasing
(p=0.25), the DeiT/timm fine-tuning recipe; ``none``: the eval transform. Every preset honours ``hflip``
(False: no flip is ever drawn, for classes a mirror changes: digits, text) and ``crop_scale`` (the smallest
share of the image area a random-resized crop keeps; torchvision's 0.08). Evaluation: resize to
``size / crop_pct`` then center crop (the paper's Resize(256) + CenterCrop(224) is crop_pct 0.875), or with
``resize="squash"`` straight to ``size x size`` with no crop (timm's ``crop_mode="squash"`` at crop_pct 1.0;
the VTAB-1k protocol).
"""

from __future__ import annotations

import math
from typing import Any

from torchvision import transforms as T

__all__ = ["build_transforms"]

_DEFAULT_CROP_SCALE = 0.08  # torchvision's and timm's RandomResizedCrop


def build_transforms(
    data_config: dict[str, Any],
    augment: bool = True,
    resize: str = "crop",
    aug: str = "basic",
    hflip: bool = True,
    crop_scale: float = _DEFAULT_CROP_SCALE,
) -> tuple[T.Compose, T.Compose]:
    """(train transform, eval transform) for ``data_config`` (keys input_size, interpolation, mean, std, crop_pct).

    ``resize``: ``crop`` (resize to size / crop_pct, center crop) or ``squash`` (resize to size x size).
    ``aug``: the training preset (``none``, ``basic``, ``randaug``); ``augment=False`` is ``none``.
    ``hflip``: random horizontal flips (p=0.5) in the training preset; ``crop_scale``: the random-resized
    crop's smallest area share (its scale range is ``(crop_scale, 1)``).
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
    if not 0 < crop_scale <= 1:
        raise ValueError(f"crop_scale must be in (0, 1], got {crop_scale!r}")
    scale = (float(crop_scale), 1.0)
    if aug == "randaug":
        train_tf = create_transform(
            (3, size, size),
            is_training=True,
            auto_augment="rand-m9-mstd0.5",
            re_prob=0.25,
            scale=scale,
            hflip=0.5 if hflip else 0.0,
            interpolation=data_config.get("interpolation", "bicubic"),
            mean=data_config["mean"],
            std=data_config["std"],
        )
        return train_tf, eval_tf
    if aug != "basic":
        raise ValueError(f"aug must be none, basic or randaug, got {aug!r}")
    flip = [T.RandomHorizontalFlip()] if hflip else []
    train_tf = T.Compose([T.RandomResizedCrop(size, scale=scale, interpolation=interp), *flip, *normalize])
    return train_tf, eval_tf
