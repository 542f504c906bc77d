"""Training on tensors a frozen part of the model computed once: the pass, the loader, the result mapped back.

Two ways of training skip a frozen part that would compute the same tensors every epoch of an unaugmented
run: the linear probe (pre-logit features, :mod:`.features`) and the frozen-prefix cache (tokens after the
frozen blocks, :mod:`.prefix`). Both go through here:

1. :func:`cache_views` runs the frozen part once over the (train, val, test) image loaders;
2. ``fit`` trains on :class:`TensorLoader` batches, whose train order is the image loader's seeded order (same
   :class:`~adaptertune.data.sampling.ResumableSampler`, same shard per rank) and which never touch the global RNG;
3. :meth:`CachedViews.result` maps ``fit``'s result back onto the built model: its tensor names, the
   caching pass counted as training time, the corrupt images the pass skipped.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import nn

from .device import autocast_context
from .distributed import DistInfo

if TYPE_CHECKING:
    from . import FitResult

__all__ = ["CachedViews", "TensorLoader", "cache_views", "run_frozen"]

Extract = Callable[[Iterable], tuple[torch.Tensor, torch.Tensor, int, float]]


@torch.no_grad()
def run_frozen(
    model: nn.Module, fn, loader: Iterable, device: torch.device, precision: str = "fp32"
) -> tuple[list[torch.Tensor], list[torch.Tensor], int, float]:
    """``fn(x)`` of every labelled batch of ``loader`` with ``model`` in eval mode on ``device``, under autocast.

    Returns (outputs, labels (on the loader's device), skipped images, seconds, synchronised on CUDA).
    """
    model.eval().to(device)
    outs, labels, skipped = [], [], 0
    t0 = time.perf_counter()
    for batch in loader:
        skipped += batch[2] if len(batch) > 2 else 0
        if batch[1].numel() == 0:
            continue
        with autocast_context(precision, device):
            outs.append(fn(batch[0].to(device)))
        labels.append(batch[1])
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return outs, labels, skipped, time.perf_counter() - t0


class TensorLoader:
    """Batches ``(x, y, 0)`` of cached tensors (on their own device) in a sampler's order.

    ``shuffle``: a :class:`~adaptertune.data.sampling.ResumableSampler` of the image loader's length, seed,
    batch size and shard, so epoch e's batches are the ones image training sees at the same seed
    (:meth:`set_epoch` / ``skip_batches`` through ``.sampler`` resume inside an epoch exactly); else dataset
    order, sharded over ranks like the eval loaders. Indexing draws no random number: iterating never moves
    the global RNG (dropout's).
    """

    def __init__(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        batch_size: int,
        shuffle: bool = False,
        seed: int = 0,
        dist: DistInfo | None = None,
    ) -> None:
        from ..data.sampling import split_sampler  # importing data/ registers every dataset family: not at start

        dist = dist or DistInfo()
        self.x, self.y, self.batch_size = x, y, batch_size
        self.sampler = split_sampler(len(y), batch_size, shuffle, seed, dist.rank, dist.world_size)

    def __len__(self) -> int:
        n = len(self.sampler) if self.sampler is not None else len(self.y)
        return -(-n // self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor, int]]:
        keys = list(self.sampler) if self.sampler is not None else list(range(len(self.y)))
        idx = [k[1] if isinstance(k, tuple) else k for k in keys]  # ResumableSampler yields (epoch, i)
        for s in range(0, len(idx), self.batch_size):
            index = torch.tensor(idx[s : s + self.batch_size], device=self.y.device)
            yield self.x[index], self.y[index], 0


@dataclass(frozen=True)
class CachedViews:
    """Loaders over the cached (train, val, test) tensors (None: no such view) and what the pass cost."""

    loaders: tuple[TensorLoader | None, ...]
    skipped: tuple[int, ...]  # corrupt images of each view's pass
    seconds: float  # the whole pass

    @property
    def images(self) -> int:
        return sum(len(lo.y) for lo in self.loaders if lo is not None)

    def result(self, result: FitResult, rename: Callable[[str], str]) -> FitResult:
        """``fit``'s result on the cached tensors as the built model's: ``rename`` maps each trained tensor's
        name; the caching pass counts as training time and its skipped images as skipped."""
        seconds = result.train_seconds + self.seconds
        return dataclasses.replace(
            result,
            best_state={rename(name): v for name, v in result.best_state.items()},
            train_seconds=seconds,
            images_per_second=result.images_per_second * result.train_seconds / max(seconds, 1e-9),
            skipped_images=result.skipped_images + self.skipped[0],
            test={**result.test, "skipped": self.skipped[2]},
            test_last={**result.test_last, "skipped": self.skipped[2]},
        )


def cache_views(
    extract: Extract, loaders: Iterable[Iterable | None], batch_size: int, seed: int, dist: DistInfo | None = None
) -> CachedViews:
    """``extract(loader)`` -> ``(x, y, skipped, seconds)`` once over each (train, val, test) image loader.

    The loaders should be unaugmented and in dataset order; the train view's :class:`TensorLoader` shuffles.
    """
    out: list[TensorLoader | None] = []
    skipped, seconds = [0, 0, 0], 0.0
    for i, loader in enumerate(loaders):
        if loader is None:
            out.append(None)
            continue
        x, y, s, t = extract(loader)
        skipped[i], seconds = s, seconds + t
        out.append(TensorLoader(x, y, batch_size, shuffle=i == 0, seed=seed, dist=dist))
    return CachedViews(tuple(out), tuple(skipped), seconds)
