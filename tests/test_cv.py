"""k-fold cross-validation: stratified folds of the pooled images, the splits a fold gives, its config errors,
and the report pairing runs of two methods by (seed, fold)."""

import numpy as np
import pytest

from adaptertune.config import DataConfig, RunConfig
from adaptertune.data import ArraySource, RawDataset, build_splits
from adaptertune.data.splits import cv_fold_indices, cv_split_indices
from adaptertune.errors import ConfigError, DataError

TARGETS = np.array([0] * 53 + [1] * 31 + [2] * 16)  # 100 images, uneven classes
DATA_CONFIG = {"input_size": (3, 8, 8), "mean": (0.5,) * 3, "std": (0.5,) * 3, "crop_pct": 1.0}


@pytest.mark.parametrize("k", [2, 3, 5, 10])
def test_folds_are_disjoint_cover_the_pool_and_are_stratified(k):
    folds = cv_fold_indices(TARGETS, k, seed=0)
    assert sorted(set(folds.tolist())) == list(range(k))  # every image in exactly one fold 0..k-1
    sizes = np.bincount(folds, minlength=k)
    assert sizes.sum() == 100 and sizes.max() - sizes.min() <= 1
    for c in range(3):  # each class split as evenly as it can be
        per_fold = np.bincount(folds[TARGETS == c], minlength=k)
        assert per_fold.max() - per_fold.min() <= 1


def test_folds_are_fixed_by_the_split_seed():
    assert np.array_equal(cv_fold_indices(TARGETS, 5, 3), cv_fold_indices(TARGETS, 5, 3))
    assert not np.array_equal(cv_fold_indices(TARGETS, 5, 3), cv_fold_indices(TARGETS, 5, 4))


def test_each_fold_is_tested_once_and_validation_comes_from_the_other_folds():
    tests = []
    for i in range(5):
        tr, va, te = cv_split_indices(TARGETS, 5, i, 0.1, seed=0)
        assert len(te) == 20 and len(va) == 8 and len(tr) == 72  # val = round(0.1 * 80)
        assert not (set(tr) & set(va) or set(tr) & set(te) or set(va) & set(te))
        assert sorted([*tr, *va, *te]) == list(range(100))
        tests.append(set(te.tolist()))
    assert set().union(*tests) == set(range(100)) and sum(map(len, tests)) == 100  # folds partition the pool
    tr, va, te = cv_split_indices(TARGETS, 5, 2, 0.0, seed=0, val_subset=10)
    assert (len(tr), len(va), len(te)) == (70, 10, 20)
    assert len(cv_split_indices(TARGETS, 5, 2, 0.0, seed=0)[1]) == 0


def test_too_few_images_for_the_folds():
    with pytest.raises(DataError, match="cannot fill `data.cv_folds` 5"):
        cv_fold_indices([0, 1, 0], 5, 0)


def _raw():
    train = ArraySource(np.arange(75 * 4, dtype=np.uint8).reshape(75, 2, 2), [0] * 40 + [1] * 35)
    test = ArraySource(np.zeros((25, 2, 2), dtype=np.uint8), [0] * 10 + [1] * 15)
    return RawDataset(train, test, ["a", "b"])


def test_build_splits_pools_train_and_test_and_cuts_the_fold():
    raw = _raw()
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
