"""The images a pre-training analysis looks at: the first of a seeded shuffle of the training split, eval view."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import torch

__all__ = ["first_training_batches"]


def first_training_batches(
    backbone: Any, data: Any, batch_size: int, n_images: int, seed: int, device: torch.device
) -> tuple[Any, list[str], list[tuple[torch.Tensor, torch.Tensor]]]:
    """Build ``backbone`` for ``data``'s classes and read batches until ``n_images`` labelled images are in.

    Augmentation is switched off (the eval transform); batches with no readable image are dropped.

    Returns:
        (the :func:`~adaptertune.backbones.create_backbone` result, the class names, the (x, y) batches).
    """
    from ..backbones import create_backbone
    from ..data import build_splits, load_raw
    from ..data.loaders import make_loader

    data = type(data)(**{**asdict(data), "augment": False})
    raw = load_raw(data)
    built = create_backbone(backbone, num_classes=len(raw.classes), seed=seed)
    splits = build_splits(data, built.data_config, raw)
    loader = make_loader(splits.train, batch_size, data.num_workers, device, shuffle=True, seed=seed)
    batches, n = [], 0
    for x, y, *_ in loader:
        if y.numel():
            batches.append((x, y))
            n += len(y)
        if n >= n_images:
            break
    return built, list(raw.classes), batches
