"""Nested ranks (``adapter.nested``): one adapter of rank R whose every leading sub-adapter is trained too.

As in DyLoRA (Valipour et al., EACL 2023, arXiv 2210.07558), each training step samples one rank r of the grid
and the adapters run only their first r bottleneck units, ``W_down[:r]``, ``b_down[:r]``, ``W_up[:, :r]`` (and
the shared ``b_up``), at the output scale the method's ``scaling`` gives rank r. Choices made here:

- *All leading r units train on a step sampled at r* (DyLoRA's non-frozen mode; its frozen mode updates only
  unit r). The units >= r get exactly zero gradient on that step; AdamW's momentum and weight decay still move
  them, as with any parameter whose gradient is zero for a step.
- *Uniform over the grid*, drawn from ``(train.seed, optimizer step)`` alone (:func:`sample_rank`), so a resumed
  run draws what the uninterrupted one drew, and every torchrun process draws the same rank.
- *Scale*: ``adapter_scale(alpha, r, scaling)``: constant alpha by default (the paper's rule), alpha / sqrt(r)
  or alpha / r under ``rsqrt`` / ``inverse``, so the sub-adapter at r computes what a plain rank-r adapter with
  the same tensors computes (:func:`truncate_tensors` writes those tensors).

Rank 0 is the adapters switched off: the backbone and the trained head (the head was trained with adapters
of rank >= 1 in front of it).
"""

from __future__ import annotations

import torch

from ...errors import ConfigError

__all__ = ["check_rank", "sample_rank", "truncate_tensors"]

_MASK = (1 << 64) - 1


def _splitmix64(x: int) -> int:
    x = (x + 0x9E3779B97F4A7C15) & _MASK
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK
    return x ^ (x >> 31)


def sample_rank(grid: tuple[int, ...], seed: int, step: int) -> int:
    """The rank that optimizer step ``step`` of a run with seed ``seed`` trains: uniform over ``grid``.

    A pure function of its arguments (SplitMix64 of the seed, then of the step), so it needs no state in a
    checkpoint; the modulo bias over 2**64 values is below 1e-17.
    """
    return grid[_splitmix64(_splitmix64(seed & _MASK) ^ (step & _MASK)) % len(grid)]


def check_rank(rank: int, full: int, what: str = "rank", allow_zero: bool = False) -> int:
    """``rank`` if it is in (0, full] ([0, full] with ``allow_zero``); else a one-line ConfigError."""
    low = 0 if allow_zero else 1
    if isinstance(rank, bool) or not isinstance(rank, int) or not low <= rank <= full:
        zero = " (0: the adapters off, head only)" if allow_zero else ""
        raise ConfigError(f"{what} {rank!r} is not a rank of this nested adapter; use {low}..{full}{zero}.")
    return rank


def truncate_tensors(tensors: dict[str, torch.Tensor], rank: int) -> dict[str, torch.Tensor]:
    """The tensors of a plain rank-``rank`` adapter set from a nested one's (any names ending in
    ``down.weight``, ``down.bias``, ``up.weight``; everything else, the head and ``up.bias``, as it is).

    Raises:
        ConfigError: ``rank`` is not in 1..the tensors' rank.
    """
    full = {v.shape[0] for k, v in tensors.items() if k.endswith("down.weight")}
    if len(full) != 1:
        raise ConfigError(f"The tensors hold no adapter set of one rank (down-projection ranks {sorted(full)}).")
    check_rank(rank, full.pop())
    out = {}
    for k, v in tensors.items():
        if k.endswith(("down.weight", "down.bias")):
            v = v[:rank]
        elif k.endswith("up.weight"):
            v = v[:, :rank]
        out[k] = v.contiguous().clone()
    return out
