"""Pure, seeded split and subset indices (no images involved).

One stratified order per (targets, seed): classes are interleaved in proportion to their size, so any
prefix of the order is a stratified sample, and so is any suffix (the complement of a prefix).

Without a subset, validation is a prefix of ``stratified_order(targets, split_seed)`` and training is the
rest. With a subset of ``n`` images, both are drawn from one order ``P = stratified_order(targets,
split_seed + 1)`` of the whole training pool: the subset is the head ``P[:n]`` and validation the tail
``P[-m:]``, ``m = round(val_fraction * n)`` (or an explicit ``val_subset``). So for one split seed:

- subsets nest (the subset of 512 lies inside the subset of 1024), as they did before;
- validation nests too (sized ``val_fraction`` of the subset, it grows with it) and stays the same set
  whatever the subset size when ``val_subset`` fixes its size;
- every subset is disjoint from every validation set as long as ``n + m`` fits in the pool;
- with ``val_fraction = 0`` the subset is exactly the one drawn before validation was sized to the run.

k-fold cross-validation (:func:`cv_fold_indices`, :func:`cv_split_indices`) deals each class's images,
shuffled by ``split_seed``, round-robin into K folds (the dealing goes on where the previous class stopped),
so folds are disjoint, cover the pool, differ in size by at most one image and in each class's count by at
most one. Fold i is the test set; validation is carved from the other K - 1 folds by
:func:`run_split_indices` (without subset) and the rest trains.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..errors import DataError

__all__ = [
    "cv_fold_indices",
    "cv_split_indices",
    "run_split_indices",
    "stratified_order",
    "subset_indices",
    "train_val_indices",
    "val_size",
]


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


def val_size(n_train: int, val_fraction: float, val_subset: int | None = None) -> int:
    """Validation images for ``n_train`` training images: ``val_subset`` if given, else ``val_fraction`` of them.

    A positive fraction gives at least one image; ``val_fraction = 0`` (and no ``val_subset``) gives none.
    """
    if val_subset is not None:
        return int(val_subset)
    return max(1, int(round(val_fraction * n_train))) if val_fraction > 0 else 0


def run_split_indices(
    targets: Sequence[int],
    val_fraction: float,
    seed: int,
    subset: int | None = None,
    val_subset: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Train and validation indices (sorted) into a training pool, validation sized to the run.

    Args:
        targets: class of every image of the pool.
        val_fraction: without ``subset``, the share of the pool held out; with it, validation is this share of
            the subset (``round(val_fraction * subset)``), drawn from the pool outside the subset.
        seed: the split seed (never the training seed).
        subset: train on a fixed stratified subset of this many images (None: the whole pool minus validation).
        val_subset: validation size in images, replacing ``val_fraction``.

    Returns:
        ``(train, val)``, disjoint; ``val`` is empty when no validation is asked for.

    Raises:
        DataError: the subset and its validation do not fit in the pool, or nothing is left to train on.

    Example:
        >>> tr, va = run_split_indices([0] * 50 + [1] * 50, 0.1, seed=0, subset=20)
        >>> len(tr), len(va)
        (20, 2)
    """
    n_pool = len(targets)
    if subset is None:
        n_val = val_size(n_pool, val_fraction, val_subset)
        if n_val >= n_pool:
            raise DataError(
                f"Validation of {n_val} images leaves no training image in a pool of {n_pool}; "
                "lower `data.val_subset` / `data.val_fraction`."
            )
        order = stratified_order(targets, seed)
        return np.sort(order[n_val:]), np.sort(order[:n_val])
    n_val = val_size(subset, val_fraction, val_subset)
    if subset + n_val > n_pool:
        raise DataError(
            f"`data.subset` {subset} plus its {n_val} validation images exceed the {n_pool} training images; "
            f"use a subset of at most {n_pool - n_val}, or a smaller `data.val_subset` / `data.val_fraction`."
        )
    order = stratified_order(targets, seed + 1)  # the stream subsets have always been drawn from
    return np.sort(order[:subset]), np.sort(order[n_pool - n_val :])  # head: subset; tail: validation


def cv_fold_indices(targets: Sequence[int], k: int, seed: int) -> np.ndarray:
    """The fold (0..k-1) of every image: stratified, fixed by ``seed`` (the split seed).

    Raises:
        DataError: fewer images than folds.
    """
    t = np.asarray(targets, dtype=np.int64)
    if len(t) < k:
        raise DataError(f"{len(t)} images cannot fill `data.cv_folds` {k} folds; use fewer folds.")
    rng = np.random.default_rng(seed)
    fold = np.empty(len(t), dtype=np.int64)
    start = 0
    for c in np.unique(t):  # sorted classes
        idx = rng.permutation(np.flatnonzero(t == c))
        fold[idx] = (start + np.arange(len(idx))) % k
        start += len(idx)
    return fold


def cv_split_indices(
    targets: Sequence[int],
    k: int,
    fold: int,
    val_fraction: float,
    seed: int,
    val_subset: int | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Train, validation and test indices (sorted) into a pooled set for fold ``fold`` of ``k``.

    Test is fold ``fold``; validation is ``val_fraction`` (or ``val_subset`` images) of the other folds, a
    stratified draw fixed by ``seed``; training is the rest of them.

    Raises:
        DataError: too few images for the folds or for the validation size.

    Example:
        >>> tr, va, te = cv_split_indices([0] * 50 + [1] * 50, 5, 0, 0.1, seed=0)
        >>> len(tr), len(va), len(te)
        (72, 8, 20)
    """
    folds = cv_fold_indices(targets, k, seed)
    test = np.flatnonzero(folds == fold)
    rest = np.flatnonzero(folds != fold)
    tr, va = run_split_indices(np.asarray(targets)[rest], val_fraction, seed, None, val_subset)
    return np.sort(rest[tr]), np.sort(rest[va]), test
