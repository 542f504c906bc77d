"""The DataLoader every run, evaluation and analysis reads a split with."""

from __future__ import annotations

import torch

from ..data import collate_skip
from ..data.base import SplitView
from ..engine.distributed import DistInfo
from ..engine.sampling import ResumableSampler, SeededAugmentView, ShardedEvalSampler

__all__ = ["make_loader"]


def make_loader(
    view: SplitView,
    batch_size: int,
    num_workers: int,
    device: torch.device,
    shuffle: bool = False,
    seed: int = 0,
    dist: DistInfo | None = None,
) -> torch.utils.data.DataLoader:
    """DataLoader with a seeded, resumable order.

    ``shuffle``: the order of epoch e comes from (seed, e) and the augmentation of item i from
    (seed, e, i), whatever the worker count (:class:`ResumableSampler`). Under torchrun each rank reads its
    shard: ``batch_size`` is then the per-rank batch. The loader's own generator keeps iterator creation
    off the global RNG.
    """
    dist = dist or DistInfo()
    if shuffle:
        dataset = SeededAugmentView(view, seed)
        sampler = ResumableSampler(len(view), seed, batch_size, dist.rank, dist.world_size)
    else:
        dataset, sampler = view, ShardedEvalSampler(len(view), dist.rank, dist.world_size) if dist.enabled else None
    return torch.utils.data.DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        generator=torch.Generator().manual_seed(seed),
        num_workers=num_workers,
        persistent_workers=num_workers > 0,
        pin_memory=device.type == "cuda",
        collate_fn=collate_skip,
    )
