import numpy as np

from adaptertune.data import stratified_order, subset_indices, train_val_indices

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
