"""Split indices: stratified orders, validation sized to the run, nested subsets (exact answers)."""

import numpy as np
import pytest

from adaptertune.config import DataConfig
from adaptertune.data import (
    ArraySource,
    RawDataset,
    build_splits,
    run_split_indices,
    stratified_order,
    subset_indices,
    train_val_indices,
    val_size,
)
from adaptertune.errors import ConfigError, DataError

TARGETS = [0] * 50 + [1] * 30 + [2] * 20


def test_order_is_permutation_and_deterministic():
    a, b = stratified_order(TARGETS, 3), stratified_order(TARGETS, 3)
    assert np.array_equal(a, b) and sorted(a) == list(range(100))
    assert not np.array_equal(a, stratified_order(TARGETS, 4))


def test_val_split_is_stratified_and_disjoint():
    tr, va = train_val_indices(TARGETS, 0.1, seed=0)
    assert len(va) == 10 and len(tr) == 90 and not set(tr) & set(va)
    assert np.bincount(np.asarray(TARGETS)[va]).tolist() == [5, 3, 2]


def test_subsets_are_nested_and_stratified():
    tr, _ = train_val_indices(TARGETS, 0.1, seed=0)
    s20 = subset_indices(tr, TARGETS, 20, seed=0)
    s40 = subset_indices(tr, TARGETS, 40, seed=0)
    assert set(s20) <= set(s40) <= set(tr)
    assert np.bincount(np.asarray(TARGETS)[s20]).tolist() == [10, 6, 4]
    assert len(subset_indices(tr, TARGETS, None, 0)) == 90


# ---------------------------------------------------------------- validation sized to the run
T = np.asarray(TARGETS)
DATA_CONFIG = {"input_size": (3, 8, 8), "mean": (0.5,) * 3, "std": (0.5,) * 3, "crop_pct": 1.0}


def test_val_size_rule():
    assert val_size(1024, 0.1) == 102 and val_size(1024, 0.0) == 0 and val_size(3, 0.1) == 1  # >= 1 when > 0
    assert val_size(1024, 0.1, val_subset=200) == 200 and val_size(1024, 0.0, val_subset=7) == 7


def test_without_subset_the_old_split_stays():
    for f in (0.0, 0.1, 0.25):
        tr, va = run_split_indices(TARGETS, f, seed=3)
        old_tr, old_va = train_val_indices(TARGETS, f, seed=3)
        assert np.array_equal(tr, old_tr) and np.array_equal(va, old_va)
    tr, va = run_split_indices(TARGETS, 0.1, seed=3, val_subset=20)  # an explicit size, same stream
    assert len(va) == 20 and set(train_val_indices(TARGETS, 0.1, 3)[1]) <= set(va) and not set(tr) & set(va)


def test_with_subset_validation_is_a_share_of_the_subset_outside_it():
    tr, va = run_split_indices(TARGETS, 0.1, seed=0, subset=40)
    assert (len(tr), len(va)) == (40, 4) and not set(tr) & set(va)  # 10% of 40, not of the 100
    assert np.bincount(T[tr]).tolist() == [20, 12, 8]  # stratified subset
    tr, va = run_split_indices(TARGETS, 0.1, seed=0, subset=40, val_subset=10)
    assert (len(tr), len(va)) == (40, 10) and not set(tr) & set(va)
    assert np.bincount(T[va], minlength=3).tolist() == [5, 3, 2]  # stratified validation


def test_subsets_nest_and_validation_is_fixed_or_nests_and_all_are_disjoint():
    sizes = (10, 20, 40, 80)
    fixed = [run_split_indices(TARGETS, 0.1, 0, subset=n, val_subset=10) for n in sizes]
    share = [run_split_indices(TARGETS, 0.1, 0, subset=n) for n in sizes]
    for (tr_a, va_a), (tr_b, va_b) in zip(fixed, fixed[1:]):
        assert set(tr_a) < set(tr_b) and np.array_equal(va_a, va_b)  # one validation set for every subset size
    for (tr_a, va_a), (tr_b, va_b) in zip(share, share[1:]):
        assert set(tr_a) < set(tr_b) and set(va_a) < set(va_b)  # validation grows with the subset and nests
    assert [len(va) for _, va in share] == [1, 2, 4, 8]
    every_train = [tr for tr, _ in fixed + share]
    every_val = [va for _, va in fixed + share]
    assert all(not set(tr) & set(va) for tr in every_train for va in every_val)  # any subset vs any validation
    assert np.array_equal(fixed[1][0], share[1][0])  # the subset does not depend on the validation size


def test_subset_without_validation_is_the_subset_drawn_before():
    for n in (10, 37, 100):
        tr, va = run_split_indices(TARGETS, 0.0, seed=2, subset=n)
        assert len(va) == 0 and np.array_equal(tr, subset_indices(np.arange(100), TARGETS, n, seed=2))


def test_split_is_deterministic_and_follows_the_split_seed():
    a = run_split_indices(TARGETS, 0.1, 5, subset=30, val_subset=8)
    b = run_split_indices(TARGETS, 0.1, 5, subset=30, val_subset=8)
    c = run_split_indices(TARGETS, 0.1, 6, subset=30, val_subset=8)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not np.array_equal(a[0], c[0]) and not np.array_equal(a[1], c[1])


def test_subset_and_validation_that_do_not_fit_are_an_error():
    assert len(run_split_indices(TARGETS, 0.0, 0, subset=100)[0]) == 100  # exactly the pool
    with pytest.raises(DataError, match=r"`data.subset` 95 plus its 10 validation images exceed the 100.*at most 90"):
        run_split_indices(TARGETS, 0.1, 0, subset=95)
    with pytest.raises(DataError, match="subset` 101"):
        run_split_indices(TARGETS, 0.0, 0, subset=101)
    with pytest.raises(DataError, match="no training image"):
        run_split_indices(TARGETS, 0.1, 0, val_subset=100)


def test_val_subset_config_check():
    assert DataConfig(val_subset=64).val_subset == 64 and DataConfig(val_subset="none").val_subset is None
    with pytest.raises(ConfigError, match="data.val_subset"):
        DataConfig(val_subset=0)


def _raw(n_train=100, with_val=False):
    img = np.zeros((n_train, 8, 8), dtype=np.uint8)
    val = ArraySource(np.zeros((30, 8, 8), dtype=np.uint8), [0] * 15 + [1] * 9 + [2] * 6) if with_val else None
    test = ArraySource(np.zeros((10, 8, 8), dtype=np.uint8), [0, 1, 2] * 3 + [0])
    return RawDataset(ArraySource(img, TARGETS[:n_train]), test, ["a", "b", "c"], val)


def test_build_splits_sizes_validation_to_the_subset():
    splits = build_splits(DataConfig(name="x", subset=40, val_fraction=0.1), DATA_CONFIG, _raw())
    assert splits.sizes() == {"train": 40, "val": 4, "test": 10}  # the old rule gave val 10 here
    assert not set(splits.train.indices) & set(splits.val.indices)
    splits = build_splits(DataConfig(name="x", subset=40, val_subset=10), DATA_CONFIG, _raw())
    assert splits.sizes() == {"train": 40, "val": 10, "test": 10}
    assert build_splits(DataConfig(name="x", val_fraction=0.1), DATA_CONFIG, _raw()).sizes()["val"] == 10
    assert build_splits(DataConfig(name="x", subset=40, val_fraction=0.0), DATA_CONFIG, _raw()).val is None


def test_build_splits_with_an_official_val_split():
    raw = _raw(with_val=True)
    assert build_splits(DataConfig(name="x"), DATA_CONFIG, raw).sizes()["val"] == 30  # whole, as before
    splits = build_splits(DataConfig(name="x", subset=50, val_fraction=0.2), DATA_CONFIG, raw)
    assert splits.sizes() == {"train": 50, "val": 10, "test": 10} and splits.val.source is raw.val
    assert np.bincount(splits.val.targets).tolist() == [5, 3, 2]
    assert build_splits(DataConfig(name="x", val_subset=20), DATA_CONFIG, raw).sizes()["val"] == 20
