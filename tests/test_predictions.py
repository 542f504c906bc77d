"""``predictions.npz`` (runs/predictions.py): the selected model's outputs on every test image, in the test view's
order, from the pass that measures ``test_acc`` (engine/loop.py ``final_test``); checked against a re-evaluation
of the saved model on the per-image and the batched loaders."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import yaml

from adaptertune.config import TrainConfig
from adaptertune.data import build_splits
from adaptertune.data.base import ImageFiles, SplitView, Unreadable
from adaptertune.data.loaders import make_loader
from adaptertune.engine.distributed import DistInfo
from adaptertune.engine.loop import EvalOutputs, evaluate, evaluate_outputs, final_test
from adaptertune.engine.stopping import PatienceStep
from adaptertune.errors import CheckpointError
from adaptertune.runs import run
from adaptertune.runs.folder import PREDICTIONS_FILE, RUN_FILES
from adaptertune.runs.load import load_run
from adaptertune.runs.predictions import Predictions, predictions_of, read_predictions, write_predictions
from helpers import make_fashion_mnist

CPU = torch.device("cpu")


def _first_epoch_is_best(acc, best, stale, patience, min_delta=0.0) -> PatienceStep:
    return PatienceStep(best=best == -float("inf"), stale=stale + 1, stop=False)


def _every_epoch_is_best(acc, best, stale, patience, min_delta=0.0) -> PatienceStep:
    return PatienceStep(best=True, stale=0, stop=False)


def _reevaluate(run_dir) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(labels, top-1, softmax) of the saved model over the run's test split, rebuilt from its folder."""
    loaded = load_run(run_dir, "cpu")
    splits = build_splits(loaded.config.data, loaded.data_config)
    loader = make_loader(splits.test, 3, 0, CPU, batched=loaded.config.data.batched)
    labels, top1, probs = [], [], []
    with torch.no_grad():
        for x, y, _ in loader:
            logits = loaded.model(x).float()
            labels.append(y)
            top1.append(logits.argmax(1))
            probs.append(logits.softmax(1))
    return torch.cat(labels).numpy(), torch.cat(top1).numpy(), torch.cat(probs).numpy()


@pytest.mark.parametrize("loader", ["per-image", "batched"])
@pytest.mark.parametrize("selected", ["last", "earlier"])
def test_predictions_are_the_selected_models_outputs_in_view_order(
    loader, selected, run_config, image_folder, tmp_path, monkeypatch, one_thread
):
    # "earlier": epoch 1 is selected and epoch 2 trains on, so the selected model gets its own test pass
    rule = _first_epoch_is_best if selected == "earlier" else _every_epoch_is_best
    monkeypatch.setattr("adaptertune.engine.loop.patience_step", rule)
    if loader == "batched":
        data = {"name": "fashion-mnist", "root": str(make_fashion_mnist(tmp_path / "fm", n_train=30, n_test=12))}
    else:
        data = {"root": str(image_folder)}
    cfg = run_config(data["root"], tmp_path / "run", data=data, epochs=2, batch_size=8, lr=0.05, device="cpu")
    run(cfg)
    out = tmp_path / "run"
    summary = json.loads((out / "summary.json").read_text())
    batched = yaml.safe_load((out / "config.yaml").read_text())["data"]["batched"]
    assert batched == ("on" if loader == "batched" else "off")
    assert summary["predictions"] == PREDICTIONS_FILE
    assert summary["best_epoch"] == (1 if selected == "earlier" else 2)
    p = read_predictions(out)
    labels, top1, probs = _reevaluate(out)
    n, c = probs.shape
    assert n == summary["split_sizes"]["test"] and p.prob.shape == (n, c)
    assert p.index.dtype == p.label.dtype == p.pred.dtype == np.int64 and p.prob.dtype == np.float16
    assert np.array_equal(p.index, np.arange(n))  # position in the test view, in its order
    assert np.array_equal(p.label, labels)
    assert np.array_equal(p.pred, top1)
    np.testing.assert_allclose(p.prob.astype(np.float32), probs, atol=2e-3)  # fp16 of the fp32 softmax
    np.testing.assert_allclose(p.prob.astype(np.float32).sum(1), 1.0, atol=c * 2**-11)
    assert p.acc == pytest.approx(summary["test_acc"], abs=1e-9)


def test_a_tuning_run_writes_no_predictions(run_config, image_folder, tmp_path, one_thread):
    out = tmp_path / "tune"
    run(run_config(image_folder, out, epochs=1, batch_size=8, device="cpu"), tuning=True)
    assert not (out / PREDICTIONS_FILE).exists()
    assert json.loads((out / "summary.json").read_text())["predictions"] is None
    with pytest.raises(CheckpointError, match="has no predictions.npz"):
        read_predictions(out)


class _Batches(list):
    """A loader that counts its passes."""

    passes = 0

    def __iter__(self):
        self.passes += 1
        return super().__iter__()


@pytest.mark.parametrize("world_size", [1, 2])
@pytest.mark.parametrize("best_epoch", [1, 2])
def test_final_test_keeps_the_outputs_of_the_selected_models_pass(tiny_vit, world_size, best_epoch):
    torch.manual_seed(0)
    model = tiny_vit(num_classes=3)
    head = model.head.weight
    moved = head.detach() + 0.5 * torch.randn_like(head)
    selected = {"head.weight": moved if best_epoch == 1 else head.detach().clone()}  # 2: the last model's tensors
    loader = _Batches([(torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 0]), 0) for _ in range(2)])
    cfg = TrainConfig(precision="fp32")
    tr = SimpleNamespace(ema=None, cfg=cfg, model=model, device=CPU, dist=DistInfo(0, world_size))
    state = SimpleNamespace(best_epoch=best_epoch, epochs_done=2, best_state=selected)
    test, test_last, outputs = final_test(tr, state, loader)
    assert loader.passes == (1 if best_epoch == 2 else 2)  # the selected model is measured once
    if world_size > 1:  # a rank sees a shard: no per-image file
        assert outputs is None
        return
    again, expected = evaluate_outputs(model, loader, CPU)  # the model now holds the selected tensors
    assert again == test and evaluate(model, loader, CPU) == test
    for k in ("label", "pred", "prob"):
        assert np.array_equal(getattr(outputs, k), getattr(expected, k))
    assert 100.0 * np.mean(outputs.pred == outputs.label) == pytest.approx(test["acc"])


def test_tied_logits_predict_the_class_the_accuracy_counts():
    class Tied(torch.nn.Module):
        def forward(self, x):
            return torch.zeros(len(x), 4)  # every class ties

    y = torch.tensor([0, 1, 2, 3, 3])
    metrics, out = evaluate_outputs(Tied(), [(torch.zeros(5, 1), y, 0)], CPU)
    assert 100.0 * np.mean(out.pred == out.label) == pytest.approx(metrics["acc"])


def _files_view(tmp_path, n=5):
    paths = [tmp_path / f"im{i}.png" for i in range(n)]
    return SplitView(ImageFiles(paths, [i % 2 for i in range(n)]), [4, 0, 3, 1, 2][:n], transform=None)


def test_an_unreadable_test_image_has_no_row(tmp_path):
    view = _files_view(tmp_path)  # positions 0..4 hold files 4, 0, 3, 1, 2
    gone = [Unreadable(str(tmp_path / "im3.png"), "truncated")]  # position 2
    kept = np.array([0, 1, 3, 4])
    labels = np.asarray(view.targets)[kept]
    outputs = EvalOutputs(labels, labels, np.full((4, 2), 0.5, np.float16))
    p = predictions_of(outputs, view, gone)
    assert p.index.tolist() == [0, 1, 3, 4] and p.acc == 100.0
    with pytest.raises(RuntimeError, match="not the 5 readable images"):
        predictions_of(outputs, view)  # a row is missing: positions cannot be assigned
    swapped = EvalOutputs(labels[::-1].copy(), labels, outputs.prob)
    with pytest.raises(RuntimeError, match="in its order"):
        predictions_of(swapped, view, gone)


def test_read_predictions_round_trip_and_one_line_errors(tmp_path):
    p = Predictions(np.arange(3), np.array([0, 1, 1]), np.array([0, 1, 0]), np.full((3, 2), 0.5, np.float16))
    write_predictions(tmp_path, p)
    back = read_predictions(tmp_path)
    for k in ("index", "label", "pred", "prob"):
        assert np.array_equal(getattr(back, k), getattr(p, k)) and getattr(back, k).dtype == getattr(p, k).dtype
    assert PREDICTIONS_FILE in RUN_FILES  # an abandoned attempt's file is the run's to delete
    path = tmp_path / PREDICTIONS_FILE
    cases = {
        b"not a zip file": "is corrupt",
        "npy": "not an .npz archive",
        None: "lacks the array 'prob'",
        "dtype": "array 'pred' has the wrong type",
    }
    for bad, match in cases.items():
        if bad is None:
            with path.open("wb") as f:
                np.savez(f, index=p.index, label=p.label, pred=p.pred)
        elif bad == "npy":
            with path.open("wb") as f:
                np.save(f, p.index)
        elif bad == "dtype":
            with path.open("wb") as f:
                np.savez(f, index=p.index, label=p.label, pred=p.pred.astype(np.float32), prob=p.prob)
        else:
            path.write_bytes(bad)
        with pytest.raises(CheckpointError, match=match) as e:
            read_predictions(tmp_path)
        assert "\n" not in str(e.value)


def test_a_run_with_an_unreadable_test_image_leaves_its_position_out(run_config, tmp_path, one_thread):
    from helpers import make_image_folder

    root = make_image_folder(tmp_path / "data", n_classes=3, n_train=6, n_test=3, size=36)
    bad = root / "test" / "class_1" / "0.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    out = tmp_path / "run"
    summary = run(run_config(root, out, epochs=1, batch_size=4, device="cpu"))
    assert summary.skipped_test_images == 1 and summary.predictions == PREDICTIONS_FILE
    loaded = load_run(out, "cpu")
    view = build_splits(loaded.config.data, loaded.data_config).test
    gone = [j for j, i in enumerate(view.indices) if view.source.describe(int(i)) == str(bad)]
    p = read_predictions(out)
    assert len(gone) == 1 and p.index.tolist() == [j for j in range(len(view)) if j != gone[0]]
    assert np.array_equal(p.label, np.asarray(view.targets)[p.index])
    assert p.acc == pytest.approx(summary.test_acc, abs=1e-9)
