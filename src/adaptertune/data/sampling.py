"""Resumable, seeded data order and augmentation.

The training order of epoch ``e`` is a permutation drawn from ``(seed, e)`` alone, and the augmentation
of item ``i`` in epoch ``e`` is drawn from ``(seed, e, i)`` alone. Neither depends on the worker count,
on the global RNG or on what ran before, so a run resumed at batch ``k`` of epoch ``e`` sees exactly the
batches and crops an uninterrupted run sees, and ``world_size`` ranks together see the batches one
process sees with the same global batch.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

__all__ = ["ResumableSampler", "SeededAugmentView", "ShardedEvalSampler", "mix_seed", "split_sampler"]


def mix_seed(*values: int) -> int:
    """A 63-bit seed from integers (numpy SeedSequence hashing: nearby inputs give unrelated seeds)."""
    state = np.random.SeedSequence([int(v) for v in values]).generate_state(2, dtype=np.uint32)
    return (int(state[0]) << 31) ^ int(state[1])


class ResumableSampler(torch.utils.data.Sampler):
    """Shuffled order per epoch from ``(seed, epoch)``; yields ``(epoch, index)`` for :class:`SeededAugmentView`.

    With ``world_size > 1`` the permutation is padded (wrapping around, as ``DistributedSampler`` does)
    to a multiple of ``world_size * batch_size`` and rank ``r`` takes positions ``r, r + W, ...``: batch
    ``k`` of all ranks together is batch ``k`` of one process with batch ``W * batch_size``.

    Call :meth:`set_epoch` before each epoch and :meth:`skip_batches` to resume inside one.
    """

    def __init__(self, n: int, seed: int, batch_size: int, rank: int = 0, world_size: int = 1) -> None:
        self.n, self.seed, self.batch_size, self.rank, self.world_size = n, seed, batch_size, rank, world_size
        self.epoch, self.start_batch = 1, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch, self.start_batch = epoch, 0

    def skip_batches(self, k: int) -> None:
        """Start the current epoch at its batch ``k`` (0-based); reset by the next :meth:`set_epoch`."""
        self.start_batch = k

    def _total(self) -> int:
        if self.world_size == 1:
            return self.n
        chunk = self.world_size * self.batch_size
        return -(-self.n // chunk) * chunk if self.n >= chunk else -(-self.n // self.world_size) * self.world_size

    def per_rank(self) -> int:
        """Items per epoch on this rank (before skipping)."""
        return self._total() // self.world_size

    def __len__(self) -> int:
        return max(0, self.per_rank() - self.start_batch * self.batch_size)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        g = torch.Generator().manual_seed(mix_seed(self.seed, self.epoch))
        order = torch.randperm(self.n, generator=g).tolist()
        total = self._total()
        order = (order * (-(-total // self.n)))[:total]  # pad by wrapping around
        mine = order[self.rank :: self.world_size]
        for i in mine[self.start_batch * self.batch_size :]:
            yield self.epoch, i


class ShardedEvalSampler(torch.utils.data.Sampler):
    """Evaluation order ``rank, rank + W, ...`` without padding, so the ranks' sums add up to the full set."""

    def __init__(self, n: int, rank: int = 0, world_size: int = 1) -> None:
        self.indices = list(range(rank, n, world_size))

    def __len__(self) -> int:
        return len(self.indices)

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)


class SeededAugmentView(torch.utils.data.Dataset):
    """Wraps a map-style dataset: item ``(epoch, i)`` is ``dataset[i]`` drawn under the seed ``(seed, epoch, i)``.

    The global torch RNG is saved and restored around each item (``fork_rng``), so loading data never
    moves the RNG that dropout uses, in the main process or in a worker.
    """

    def __init__(self, dataset: torch.utils.data.Dataset, seed: int) -> None:
        self.dataset, self.seed = dataset, seed

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]):
        epoch, i = key
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(mix_seed(self.seed, epoch, i))
            return self.dataset[i]


def split_sampler(
    n: int, batch_size: int, shuffle: bool, seed: int = 0, rank: int = 0, world_size: int = 1
) -> ResumableSampler | ShardedEvalSampler | None:
    """The order a loader reads ``n`` items in: ``shuffle``, a :class:`ResumableSampler` (this rank's shard of
    the seeded order); else this rank's :class:`ShardedEvalSampler` shard under several processes, or None
    (dataset order) in one."""
    if shuffle:
        return ResumableSampler(n, seed, batch_size, rank, world_size)
    return ShardedEvalSampler(n, rank, world_size) if world_size > 1 else None
