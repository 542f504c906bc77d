"""Seeds are paired across methods (runs/train.py): at one seed every method trains on the same images in the
same order.

The report's paired statistics (reports/stats.py) rely on this: the per-seed difference between two
methods removes the seed's split, subset and data-order luck only if both methods saw the same ones.
"""

from __future__ import annotations

import pytest

from adaptertune.config import RunConfig
from adaptertune.methods import METHODS
from helpers import TINY_VIT


class _Stop(Exception):
    pass


def _epochs(loader, n: int) -> list[list[int]]:
    """Labels batch by batch over ``n`` epochs, read the way the training loop reads the loader."""
    out = []
    for epoch in range(1, n + 1):
        sampler = getattr(loader, "sampler", None)
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(epoch)
        out.append([int(y) for batch in loader for y in batch[1]])
    return out


def _seen(method: str, seed: int, image_folder, tmp_path, monkeypatch, data: dict | None = None) -> dict:
    """What ``run`` hands the training loop for ``method`` at ``seed``: split indices and two epochs' order
    (``data``: the data settings other than name and root; default a 16-image subset)."""
    import adaptertune.runs.train as runs

    seen: dict = {}
    build_splits = runs.build_splits

    def spy_splits(*args, **kwargs):
        splits = build_splits(*args, **kwargs)
        seen["indices"] = [v.indices.tolist() for v in (splits.train, splits.val, splits.test)]
        return splits

    def spy_fit(model, train_loader, *args, **kwargs):
        seen["order"] = _epochs(train_loader, 2)
        raise _Stop

    monkeypatch.setattr(runs, "build_splits", spy_splits)
    monkeypatch.setattr(runs, "fit", spy_fit)
    info = METHODS.get(method)
    raw = {
        "backbone": TINY_VIT,
        "data": {"name": "imagefolder", "root": str(image_folder), "num_workers": 0, **(data or {"subset": 16})},
        "method": method,
        "train": {"epochs": 2, "batch_size": 4, "seed": seed},
        "out_dir": str(tmp_path / f"{method}-{seed}-{len(list(tmp_path.iterdir()))}"),
    }
    small = {"rank": 2, "placement": "last:1", "prompts": 2}  # whichever of these the method takes
    if mine := {k: v for k, v in small.items() if k in info.option_names()}:
        raw[method] = mine
    cfg = RunConfig.from_dict(raw)
    with pytest.raises(_Stop):
        runs.run(cfg)
    return seen


@pytest.fixture(scope="module")
def reference(image_folder, tmp_path_factory):
    """The head baseline at seeds 0 and 1 (what every other method is compared with)."""
    mp = pytest.MonkeyPatch()
    try:
        return {s: _seen("head", s, image_folder, tmp_path_factory.mktemp("ref"), mp) for s in (0, 1)}
    finally:
        mp.undo()


@pytest.mark.parametrize("method", METHODS.names())
def test_every_method_sees_the_heads_split_and_data_order_at_the_same_seed(
    method, reference, image_folder, tmp_path, monkeypatch
):
    if method == "lora":
        pytest.importorskip("peft")
    seen = _seen(method, 0, image_folder, tmp_path, monkeypatch)
    assert seen["indices"] == reference[0]["indices"]  # same train subset, validation and test images
    assert seen["order"] == reference[0]["order"]  # same batches, epoch by epoch


def test_the_reference_itself_is_a_real_check(reference):
    """The order changes with the epoch and with the training seed; the split does not (split_seed fixes it)."""
    first, second = reference[0]["order"]
    assert len(first) == 16 and sorted(first) == sorted(second) and first != second
    assert reference[1]["order"] != reference[0]["order"] and reference[1]["indices"] == reference[0]["indices"]


def test_under_cross_validation_methods_pair_by_seed_and_fold(image_folder, tmp_path, monkeypatch):
    """Same (seed, fold): every method trains, validates and tests on the same images in the same order;
    another fold tests on other images (the report pairs runs by (seed, fold), reports/stats.py)."""

    def seen(method, fold, seed=0):
        cv = {"cv_folds": 4, "cv_fold": fold, "val_fraction": 0.1}
        return _seen(method, seed, image_folder, tmp_path, monkeypatch, data=cv)

    head, adapter, full = seen("head", 1), seen("adapter", 1), seen("full", 1)
    assert head["indices"] == adapter["indices"] == full["indices"]
    assert head["order"] == adapter["order"] == full["order"]
    train, val, test = head["indices"]
    assert (len(train), len(val), len(test)) == (43, 5, 16)  # 64 pooled images (48 train + 16 test), 4 folds
    other = seen("head", 2)["indices"]
    assert not set(other[2]) & set(test) and seen("head", 1, seed=1)["indices"] == head["indices"]
