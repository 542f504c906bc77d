"""Split indices: stratified orders, validation sized to the run, nested subsets (exact answers), and k-fold
cross-validation (stratified folds of the pooled images)."""

import numpy as np
import pytest

from adaptertune.config import DataConfig, RunConfig
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
from adaptertune.data.splits import cv_fold_indices, cv_split_indices
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


# ---------------------------------------------------------------- k-fold cross-validation
# stratified folds of the pooled images, the splits a fold gives, its config errors, a run and a sweep over folds
CV_TARGETS = np.array([0] * 53 + [1] * 31 + [2] * 16)  # 100 images, uneven classes


@pytest.mark.parametrize("k", [2, 3, 5, 10])
def test_folds_are_disjoint_cover_the_pool_and_are_stratified(k):
    folds = cv_fold_indices(CV_TARGETS, k, seed=0)
    assert sorted(set(folds.tolist())) == list(range(k))  # every image in exactly one fold 0..k-1
    sizes = np.bincount(folds, minlength=k)
    assert sizes.sum() == 100 and sizes.max() - sizes.min() <= 1
    for c in range(3):  # each class split as evenly as it can be
        per_fold = np.bincount(folds[CV_TARGETS == c], minlength=k)
        assert per_fold.max() - per_fold.min() <= 1


def test_folds_are_fixed_by_the_split_seed():
    assert np.array_equal(cv_fold_indices(CV_TARGETS, 5, 3), cv_fold_indices(CV_TARGETS, 5, 3))
    assert not np.array_equal(cv_fold_indices(CV_TARGETS, 5, 3), cv_fold_indices(CV_TARGETS, 5, 4))


def test_each_fold_is_tested_once_and_validation_comes_from_the_other_folds():
    tests = []
    for i in range(5):
        tr, va, te = cv_split_indices(CV_TARGETS, 5, i, 0.1, seed=0)
        assert len(te) == 20 and len(va) == 8 and len(tr) == 72  # val = round(0.1 * 80)
        assert not (set(tr) & set(va) or set(tr) & set(te) or set(va) & set(te))
        assert sorted([*tr, *va, *te]) == list(range(100))
        tests.append(set(te.tolist()))
    assert set().union(*tests) == set(range(100)) and sum(map(len, tests)) == 100  # folds partition the pool
    tr, va, te = cv_split_indices(CV_TARGETS, 5, 2, 0.0, seed=0, val_subset=10)
    assert (len(tr), len(va), len(te)) == (70, 10, 20)
    assert len(cv_split_indices(CV_TARGETS, 5, 2, 0.0, seed=0)[1]) == 0


def test_too_few_images_for_the_folds():
    with pytest.raises(DataError, match="cannot fill `data.cv_folds` 5"):
        cv_fold_indices([0, 1, 0], 5, 0)


def _cv_raw():
    train = ArraySource(np.arange(75 * 4, dtype=np.uint8).reshape(75, 2, 2), [0] * 40 + [1] * 35)
    test = ArraySource(np.zeros((25, 2, 2), dtype=np.uint8), [0] * 10 + [1] * 15)
    return RawDataset(train, test, ["a", "b"])


def test_build_splits_pools_train_and_test_and_cuts_the_fold():
    raw = _cv_raw()
    seen = []
    for i in range(5):
        s = build_splits(DataConfig(name="x", cv_folds=5, cv_fold=i, val_fraction=0.1), DATA_CONFIG, raw)
        assert s.sizes() == {"train": 72, "val": 8, "test": 20}
        assert s.train.source is s.val.source is s.test.source and len(s.test.source) == 100
        assert sorted(s.test.targets) == [0] * 10 + [1] * 10  # 50 / 50 pooled classes, stratified
        seen += s.test.indices.tolist()
    assert sorted(seen) == list(range(100))
    pool = build_splits(DataConfig(name="x", cv_folds=5, cv_fold=0), DATA_CONFIG, raw).test.source
    assert pool.targets == raw.train.targets + raw.test.targets
    assert np.array_equal(np.asarray(pool.load(76)), np.asarray(raw.test.load(1)))  # index 75+ is the test split
    assert pool.describe(3) == raw.train.describe(3)


@pytest.mark.parametrize(
    "data, match",
    [
        ({"cv_folds": 1, "cv_fold": 0}, r"`data.cv_folds` must be an integer >= 2 \(or unset\), got 1"),
        ({"cv_folds": 5, "cv_fold": 5}, r"`data.cv_fold` must be one of 0..4 with `data.cv_folds` 5, got 5"),
        ({"cv_folds": 5, "cv_fold": -1}, r"must be one of 0..4 .* got -1"),
        ({"cv_folds": 5}, r"must be one of 0..4 .* got None"),
        ({"cv_fold": 2}, r"`data.cv_fold` 2 needs `data.cv_folds`"),
        ({"cv_folds": 5, "cv_fold": 0, "subset": 100}, r"`data.subset` 100 cannot be combined with `data.cv_folds`"),
        ({"cv_folds": 5, "cv_fold": 0, "test_subset": 9}, r"`data.test_subset` 9 cannot be combined"),
        ({"cv_folds": "x", "cv_fold": 0}, r"`data.cv_folds` must be an integer, got 'x'"),
    ],
)
def test_bad_cv_settings_are_one_line_config_errors(data, match):
    with pytest.raises(ConfigError, match=match) as e:
        RunConfig.from_dict({"data": {"name": "lfw", **data}})
    assert "\n" not in str(e.value)


def test_cv_settings_from_strings_and_in_the_protocol():
    from adaptertune.runs.summary import make_protocol

    cfg = RunConfig.from_dict({"data": {"name": "lfw", "cv_folds": "5", "cv_fold": "3"}})
    assert (cfg.data.cv_folds, cfg.data.cv_fold) == (5, 3)
    dc = {"input_size": (3, 8, 8), "mean": (0.5,) * 3, "std": (0.5,) * 3}
    p = make_protocol(cfg, dc, ["face", "non-face"], {"train": 150, "test": 50}, selection="best_val_top1")
    assert (p["cv_folds"], p["cv_fold"]) == (5, 3)
    plain = make_protocol(RunConfig.from_dict({"data": {"name": "lfw"}}), dc, ["a"], {}, selection="last_epoch")
    assert "cv_folds" not in plain and "cv_fold" not in plain  # older runs keep their protocol


@pytest.mark.slow
def test_a_cross_validated_run_records_its_fold_and_every_step_loss(run_config, image_folder, tmp_path):
    from adaptertune.reports.collect import collect_runs
    from adaptertune.runs import run
    from adaptertune.runs.folder import read_metrics

    cfg = run_config(
        image_folder,
        tmp_path / "runs" / "fold2",
        adapter={"rank": 2, "placement": "last:1"},
        data={"cv_folds": 4, "cv_fold": 2},
        epochs=2,
        batch_size=8,
        seed=0,
        log_every_steps=4,
    )
    s = run(cfg)
    assert s.split_sizes == {"train": 43, "val": 5, "test": 16}  # 64 pooled images, 4 folds, 10% validation
    assert (s.protocol["cv_folds"], s.protocol["cv_fold"]) == (4, 2)
    for m in read_metrics(tmp_path / "runs" / "fold2"):  # 43 images, batch 8: 6 steps (5 full, one of 3)
        assert len(m["step_loss"]) == 6
        weighted = (sum(m["step_loss"][:5]) * 8 + m["step_loss"][5] * 3) / 43
        assert weighted == pytest.approx(m["train_loss"], rel=1e-5)
    (rec,) = collect_runs(tmp_path / "runs")
    assert rec.pair == (0, 2) and rec.loss_auc is not None and isinstance(rec.diverged, bool)


def test_a_sweep_over_the_folds():
    from adaptertune.sweeps.sweep import SweepSpec, expand_grid

    spec = SweepSpec("cv", base={"data": {"name": "lfw", "cv_folds": 5}}, grid={"data.cv_fold": [0, 1, 2, 3, 4]})
    points = expand_grid(spec)
    assert [p.name for p in points] == [f"cv_fold={i}" for i in range(5)]
    assert [RunConfig.from_dict(p.config).data.cv_fold for p in points] == [0, 1, 2, 3, 4]


# ---------------------------------------------------------------- a subset per training seed
# data.subset_per_seed: the subset and its validation are drawn with resolve.subset_draw_seed(split_seed, seed);
# the test split stays the one split_seed fixes, so runs at different seeds are paired per test image
def _per_seed_splits(seed: int, with_val: bool = False, **data):
    from adaptertune.resolve import resolve_config

    d = {"name": "x", "subset": 30, "val_fraction": 0.2, "subset_per_seed": True, "test_subset": 6, **data}
    cfg = resolve_config(RunConfig.from_dict({"data": d, "train": {"seed": seed}}))
    return cfg, build_splits(cfg.data, DATA_CONFIG, _raw(with_val=with_val))


def _indices(splits) -> list[list[int]]:
    return [v.indices.tolist() for v in (splits.train, splits.val, splits.test)]


@pytest.mark.parametrize("with_val", [False, True])
def test_each_seed_draws_its_own_subset_and_validation_and_shares_the_test_images(with_val):
    from adaptertune.resolve import subset_draw_seed

    (cfg0, s0), (_, again), (cfg1, s1) = (_per_seed_splits(seed, with_val) for seed in (0, 0, 1))
    assert (cfg0.data.subset_seed, cfg1.data.subset_seed) == (subset_draw_seed(0, 0), subset_draw_seed(0, 1))
    assert cfg0.data.subset_seed != cfg1.data.subset_seed
    assert _indices(s0) == _indices(again)  # seed 0 twice: the same draw
    assert s0.train.indices.tolist() != s1.train.indices.tolist()
    assert s0.val.indices.tolist() != s1.val.indices.tolist()
    off = DataConfig(name="x", subset=30, val_fraction=0.2, test_subset=6)
    fixed = build_splits(off, DATA_CONFIG, _raw(with_val=with_val))
    assert s0.test.indices.tolist() == s1.test.indices.tolist() == fixed.test.indices.tolist()
    for s in (s0, s1):
        assert np.bincount(s.train.targets).tolist() == [15, 9, 6]  # stratified, as the fixed subset
        assert len(s.val) == 6 and np.bincount(s.val.targets).tolist() == [3, 2, 1]
        assert with_val or not set(s.train.indices) & set(s.val.indices)  # an official val split is apart anyway


def test_without_the_flag_the_split_is_todays():
    from adaptertune.resolve import resolve_config

    cfg = resolve_config(RunConfig.from_dict({"data": {"name": "x", "subset": 30}, "train": {"seed": 4}}))
    assert cfg.data.subset_seed is None
    splits = build_splits(cfg.data, DATA_CONFIG, _raw())
    tr, va = run_split_indices(TARGETS, 0.1, 0, subset=30)
    assert splits.train.indices.tolist() == tr.tolist() and splits.val.indices.tolist() == va.tolist()
    resolved, _ = _per_seed_splits(3)
    assert resolve_config(resolved) == resolved  # idempotent: config.yaml's subset_seed resolves to itself


def test_subset_per_seed_config_errors():
    from adaptertune.resolve import resolve_config

    with pytest.raises(ConfigError, match="needs `data.subset`"):
        DataConfig(subset_per_seed=True)
    with pytest.raises(ConfigError, match="cv_folds 5"):
        DataConfig(subset_per_seed=True, cv_folds=5, cv_fold=0)
    with pytest.raises(ConfigError, match="`data.subset_seed` 7 is set by `data.subset_per_seed`"):
        DataConfig(subset=10, subset_seed=7)
    copied = {"data": {"name": "x", "subset": 10, "subset_per_seed": True, "subset_seed": 7}, "train": {"seed": 1}}
    with pytest.raises(ConfigError, match="is not the seed of `data.split_seed` 0 and `train.seed` 1"):
        resolve_config(RunConfig.from_dict(copied))
    with pytest.raises(ConfigError, match="undecided"):  # an unresolved config would draw split_seed's subset
        build_splits(DataConfig(name="x", subset=10, subset_per_seed=True), DATA_CONFIG, _raw())


def test_subset_per_seed_is_in_the_protocol_and_its_seed_is_free_within_a_cell():
    from adaptertune.runs.summary import CELL_FREE_KEYS, make_protocol

    cfg, _ = _per_seed_splits(2)
    p = make_protocol(cfg, DATA_CONFIG, ["a", "b", "c"], {}, selection="best_val_top1")
    assert p["subset_per_seed"] is True and "subset_seed" not in p
    assert "subset_per_seed" not in make_protocol(RunConfig(), DATA_CONFIG, [], {}, selection="best_val_top1")
    assert "data.subset_seed" in CELL_FREE_KEYS


class _StopAt:
    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_start(self, total_steps, steps_per_epoch, start_step):
        pass

    def on_step(self, step, loss, lr):
        if step + 1 == self.step:
            raise KeyboardInterrupt

    def on_epoch_end(self, metrics):
        pass


def test_a_subset_per_seed_run_records_its_draw_and_resumes(run_config, image_folder, tmp_path, one_thread):
    import yaml

    from adaptertune.resolve import subset_draw_seed
    from adaptertune.runs import run
    from adaptertune.runs.predictions import read_predictions

    def cfg(out):
        data = {"subset": 16, "subset_per_seed": True}
        return run_config(image_folder, out, data=data, epochs=2, batch_size=8, seed=1, device="cpu")

    whole = run(cfg(tmp_path / "whole"))
    assert whole.subset_seed == subset_draw_seed(0, 1) and whole.protocol["subset_per_seed"] is True
    saved = yaml.safe_load((tmp_path / "whole" / "config.yaml").read_text())["data"]
    assert (saved["subset_per_seed"], saved["subset_seed"]) == (True, subset_draw_seed(0, 1))
    with pytest.raises(KeyboardInterrupt):
        run(cfg(tmp_path / "cut"), [_StopAt(3)])  # 16 images, batch 8: stopped in epoch 2
    resumed = run(cfg(tmp_path / "cut"), resume=True)
    assert (resumed.test_acc, resumed.best_val_acc) == (whole.test_acc, whole.best_val_acc)
    a, b = read_predictions(tmp_path / "whole"), read_predictions(tmp_path / "cut")
    assert np.array_equal(a.prob, b.prob) and np.array_equal(a.index, b.index)
