"""The loader every run, evaluation and analysis reads a split with: per-image DataLoader or batched arrays.

An array dataset (Fashion-MNIST, MNIST, CIFAR, SVHN, lfw, digits) whose transforms translate
(:func:`~adaptertune.data.batched.batch_pipeline`) is held once as a uint8 tensor on the training device and
transformed a batch at a time there (:class:`ArrayLoader`); anything else goes through a DataLoader with
per-image PIL transforms in worker processes. Both read the same seeded, resumable order (:mod:`.sampling`).
:func:`split_loaders` builds a run's (train, val, test) loaders and decides ``data.batched: auto`` for them.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import torch

from ..config import BATCHED_MODES, DataConfig
from ..errors import ConfigError
from .base import SplitView, Unreadable, collate_unreadable
from .batched import BatchPipeline, batch_pipeline, draw_params, view_arrays
from .sampling import SeededAugmentView, mix_seed, split_sampler

__all__ = ["ArrayLoader", "ImageLoader", "default_workers", "make_loader", "split_loaders", "unreadable_of"]
# An eval view's resized uint8 levels are kept on the device up to this size; a larger one is resized per batch
EVAL_CACHE_BYTES = 2 * 2**30


def default_workers(cores: int, local_ranks: int = 1) -> int:
    """DataLoader workers per process: the cores shared by the processes of this machine."""
    return max(1, cores // max(1, local_ranks))


class ArrayLoader:
    """Batches ``(x, y, 0)`` of an array view, transformed on ``device``; iterates like the image DataLoader.

    ``sampler``: a :class:`ResumableSampler` (training: image ``i`` of epoch ``e`` gets the parameters
    seeded by ``(seed, e, i)``, as :class:`SeededAugmentView` seeds the PIL path), a
    :class:`ShardedEvalSampler`, or None (dataset order). A view without random ops is resized once
    (:data:`EVAL_CACHE_BYTES`) and only normalised per batch.
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        pipeline: BatchPipeline,
        batch_size: int,
        device: torch.device,
        sampler: torch.utils.data.Sampler | None = None,
        seed: int = 0,
    ) -> None:
        self.images, self.labels = images.to(device), labels.to(device)  # (N, C, H, W) uint8, (N,)
        self.pipeline, self.batch_size, self.sampler, self.seed = pipeline, batch_size, sampler, seed
        self._levels: torch.Tensor | None = None

    def __len__(self) -> int:
        n = len(self.sampler) if self.sampler is not None else len(self.labels)
        return -(-n // self.batch_size)

    def _cached_levels(self) -> torch.Tensor | None:
        if self._levels is None and not self.pipeline.random and len(self.images):
            first = self.pipeline.levels(self.images[:1])
            if first[0].numel() * len(self.images) <= EVAL_CACHE_BYTES:
                chunks = [self.pipeline.levels(self.images[s : s + 1024]) for s in range(0, len(self.images), 1024)]
                self._levels = torch.cat(chunks).to(torch.uint8)  # whole levels 0..255
        return self._levels

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor, int]]:
        keys = list(self.sampler) if self.sampler is not None else list(range(len(self.labels)))
        levels = self._cached_levels()
        h, w = self.images.shape[-2:]
        for s in range(0, len(keys), self.batch_size):
            chunk = keys[s : s + self.batch_size]
            idx = [k[1] if isinstance(k, tuple) else k for k in chunk]
            index = torch.tensor(idx, device=self.images.device)
            if levels is not None:
                x = self.pipeline.normalize(levels[index].float())
            elif self.pipeline.random:
                params = draw_params(self.pipeline, [mix_seed(self.seed, e, i) for e, i in chunk], h, w)
                x = self.pipeline(self.images[index], params)
            else:
                x = self.pipeline(self.images[index])
            yield x, self.labels[index], 0


class ImageLoader(torch.utils.data.DataLoader):
    """The per-image DataLoader: batches ``(x, y, n_skipped)``; the files it skipped as unreadable (in any
    epoch, decoded here or in a worker) are kept in ``unreadable`` (path -> reason) for the run folder."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, collate_fn=collate_unreadable, **kwargs)
        self.unreadable: dict[str, str] = {}

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor, int]]:
        for x, y, gone in super().__iter__():
            for u in gone:
                self.unreadable.setdefault(u.path, u.reason)
            yield x, y, len(gone)


def unreadable_of(loader: object) -> list[Unreadable]:
    """The files ``loader`` has skipped so far, sorted by path (none for array and cached loaders)."""
    found = getattr(loader, "unreadable", None) or {}
    return [Unreadable(p, found[p]) for p in sorted(found)]


def _array_loader(
    view: SplitView, batch_size: int, device: torch.device, sampler, seed: int, mode: str
) -> ArrayLoader | None:
    arrays = view_arrays(view)
    pipeline = batch_pipeline(view.transform) if arrays is not None else None
    if pipeline is None:
        if mode == "on":
            what = "its images are not held in an array" if arrays is None else "its transform has other steps"
            raise ConfigError(
                f"`data.batched` is 'on' but this split cannot be transformed in batches ({what}); use 'auto'."
            )
        return None
    return ArrayLoader(*arrays, pipeline, batch_size, device, sampler, seed)


def make_loader(
    view: SplitView,
    batch_size: int,
    num_workers: int | None,
    device: torch.device,
    shuffle: bool = False,
    seed: int = 0,
    *,
    rank: int = 0,
    world_size: int = 1,
    batched: str = "auto",
) -> ImageLoader | ArrayLoader:
    """A loader with a seeded, resumable order, yielding ``(images, labels, n_skipped)``.

    ``shuffle``: the order of epoch e comes from (seed, e) and the augmentation of item i from
    (seed, e, i), whatever the worker count (:class:`~.sampling.ResumableSampler`). Under torchrun each rank
    (``rank`` of ``world_size``) reads its shard: ``batch_size`` is then the per-rank batch. The loader's own
    generator keeps iterator creation off the global RNG.

    Args:
        num_workers: DataLoader worker processes; None: :func:`default_workers` of this machine's cores.
        batched: ``auto``: an array view whose transforms translate is transformed in batches on ``device``
            (:class:`ArrayLoader`); ``on``: that, or a ConfigError; ``off``: always per image.
    """
    if batched not in BATCHED_MODES:
        raise ConfigError(f"`data.batched` must be one of {', '.join(BATCHED_MODES)}, got {batched!r}.")
    sampler = split_sampler(len(view), batch_size, shuffle, seed, rank, world_size)
    if batched != "off" and (arrays := _array_loader(view, batch_size, device, sampler, seed, batched)) is not None:
        return arrays
    if num_workers is None:
        num_workers = default_workers(len(os.sched_getaffinity(0)), world_size)
    return ImageLoader(
        SeededAugmentView(view, seed) if shuffle else view,
        batch_size=batch_size,
        sampler=sampler,
        generator=torch.Generator().manual_seed(seed),
        num_workers=num_workers,
        persistent_workers=num_workers > 0,
        prefetch_factor=4 if num_workers > 0 else None,
        pin_memory=device.type == "cuda",
    )


def split_loaders(
    views: tuple[SplitView, SplitView | None, SplitView | None],
    data: DataConfig,
    batch_size: int,
    device: torch.device,
    seed: int = 0,
    *,
    rank: int = 0,
    world_size: int = 1,
) -> tuple[tuple, str]:
    """The (train, val, test) loaders of a run's ``views`` (``data.num_workers``, ``data.batched``) and the
    ``data.batched`` value they were built with.

    The train loader shuffles (seeded by ``seed``); a missing val split gives None, a missing test split ``()``
    (an empty loader). ``batched: auto`` becomes ``on`` when every split is transformed in batches, else
    ``off``, and then every split goes per image, so the splits of one run share one input path.
    """
    train, val, test = views

    def build(mode: str) -> tuple:
        nw, shard = data.num_workers, {"rank": rank, "world_size": world_size, "batched": mode}
        return (
            make_loader(train, batch_size, nw, device, True, seed, **shard),
            make_loader(val, batch_size, nw, device, **shard) if val is not None else None,
            make_loader(test, batch_size, nw, device, **shard) if test is not None else (),
        )

    loaders = build(data.batched)
    if data.batched != "auto":
        return loaders, data.batched
    kinds = {isinstance(lo, ArrayLoader) for lo, v in zip(loaders, views, strict=True) if v is not None}
    if kinds == {True}:
        return loaders, "on"
    return (build("off") if True in kinds else loaders), "off"  # some splits cannot: every split per image
