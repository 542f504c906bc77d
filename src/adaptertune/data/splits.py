"""Pure, seeded split and subset indices (no images involved).

One stratified order per (targets, seed): classes are interleaved in proportion to their size, so any
prefix of the order is a stratified sample. Validation is a prefix; subsets are prefixes of what is left,
so a subset of 100 is contained in a subset of 200.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["stratified_order", "subset_indices", "train_val_indices"]


def stratified_order(targets: Sequence[int], seed: int) -> np.ndarray:
    """A permutation of ``range(len(targets))`` whose every prefix is stratified by class."""
    t = np.asarray(targets, dtype=np.int64)
    rng = np.random.default_rng(seed)
    keys = np.empty(len(t), dtype=np.float64)
    for c in np.unique(t):  # sorted classes: the order does not depend on dict/set iteration
        idx = np.flatnonzero(t == c)
        perm = rng.permutation(idx)
        keys[perm] = (np.arange(len(perm)) + rng.random()) / len(perm)  # fractional position within class
    return np.lexsort((np.arange(len(t)), keys))


def train_val_indices(targets: Sequence[int], val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Stratified train/val split; sorted index arrays. ``seed`` is the split seed, not the training seed."""
    if val_fraction <= 0:
        return np.arange(len(targets)), np.arange(0)
    order = stratified_order(targets, seed)
    n_val = max(1, int(round(val_fraction * len(order))))
    return np.sort(order[n_val:]), np.sort(order[:n_val])


def subset_indices(indices: np.ndarray, targets: Sequence[int], n: int | None, seed: int) -> np.ndarray:
    """A fixed stratified subset of ``n`` of ``indices`` (all of them when n is None or too large)."""
    if n is None or n >= len(indices):
        return np.asarray(indices)
    t = np.asarray(targets)[indices]
    order = stratified_order(t, seed + 1)  # its own stream: does not reuse the val split's draws
    return np.sort(np.asarray(indices)[order[:n]])
