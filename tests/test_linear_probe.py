"""``linear-probe-cached`` is ``head --no-augment`` on features computed once: same steps, same result, exact resume.

Tolerance: the two runs feed the classifier the same images in the same batches, but the backbone computes
a training batch's features in the head run and dataset-order batches in the cached one. A matmul row need
not be bitwise independent of the other rows of its batch (BLAS kernels block by the batch size), so the
features may differ in the last fp32 bit; over a few dozen AdamW steps that stays below 1e-5 relative in a
loss and 1e-6 in a weight. A wrong batch order, dropout mask or schedule changes the loss in the 2nd-3rd
digit (see ``test_the_comparison_detects_another_order``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from adaptertune.cli import main
from adaptertune.config import RunConfig
from adaptertune.data.sampling import ResumableSampler
from adaptertune.engine import Callback, load_tensors
from adaptertune.engine.cached import TensorLoader
from adaptertune.engine.distributed import DistInfo
from adaptertune.engine.features import extract_features
from adaptertune.errors import ConfigError
from adaptertune.runs import CHECKPOINT_FILE, run
from adaptertune.runs.folder import ADAPTER_FILE
from helpers import TIMING, TINY_VIT

HELPER = Path(__file__).with_name("resume_helper.py")
X = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
# run_config: 20 images (8 more for validation), 3 epochs of batch 6 (4 steps per epoch, the last one short), with
# timm's dropout before the classifier (drop_rate), so the dropout masks must match too
PROBE_RUN = {"backbone": {**TINY_VIT, "args": {"drop_rate": 0.5}}, "epochs": 3, "batch_size": 6, "seed": 1}
PROBE_RUN |= {"device": "cpu", "data": {"subset": 20, "val_subset": 8}}
LPC = "linear-probe-cached"
HEAD_RUN = {**PROBE_RUN, "data": {**PROBE_RUN["data"], "augment": False}}  # the head run: head --no-augment


class _Steps(Callback):
    def __init__(self) -> None:
        self.losses: list[tuple[int, float, float]] = []

    def on_train_start(self, total_steps, steps_per_epoch, start_step):
        self.steps_per_epoch = steps_per_epoch

    def on_step(self, step, loss, lr):
        self.losses.append((step, loss, lr))


def _epoch_lines(run_dir: Path) -> list[dict]:
    return [{k: v for k, v in json.loads(line).items() if k not in TIMING} for line in open(run_dir / "metrics.jsonl")]


def _train(cfg: RunConfig):
    steps = _Steps()
    summary = run(cfg, [steps])
    epochs = _epoch_lines(Path(cfg.out_dir))
    weights, _ = load_tensors(Path(cfg.out_dir) / ADAPTER_FILE)
    return summary, steps, epochs, weights


@pytest.fixture(scope="module")
def head_run(run_config, image_folder, tmp_path_factory):
    return _train(run_config(image_folder, tmp_path_factory.mktemp("head") / "head", "head", **HEAD_RUN))


def test_linear_probe_cached_equals_head_without_augmentation_step_by_step(
    run_config, head_run, image_folder, tmp_path
):
    """4 batches per epoch (the last one short), 3 epochs, dropout before the head, validation selection."""
    head, cached = head_run, _train(run_config(image_folder, tmp_path / LPC, LPC, **PROBE_RUN))
    assert head[1].steps_per_epoch == cached[1].steps_per_epoch == 4
    (hs, hsteps, hepochs, hw), (cs, csteps, cepochs, cw) = head, cached
    assert [(s, lr) for s, _, lr in hsteps.losses] == [(s, lr) for s, _, lr in csteps.losses]  # same schedule
    assert len(hsteps.losses) == 12
    torch.testing.assert_close([x for _, x, _ in csteps.losses], [x for _, x, _ in hsteps.losses], rtol=1e-5, atol=0)
    assert len(hepochs) == len(cepochs) == 3
    for a, b in zip(hepochs, cepochs, strict=True):
        assert {k: v for k, v in a.items() if "loss" not in k} == {k: v for k, v in b.items() if "loss" not in k}
        torch.testing.assert_close(
            [a["train_loss"], a["val_loss"]], [b["train_loss"], b["val_loss"]], rtol=1e-5, atol=0
        )
    assert (cs.test_acc, cs.best_val_acc, cs.best_epoch, cs.trainable_params) == (
        hs.test_acc,
        hs.best_val_acc,
        hs.best_epoch,
        hs.trainable_params,
    )
    assert cw.keys() == hw.keys() == {"head.weight", "head.bias"}
    for k in hw:
        torch.testing.assert_close(cw[k], hw[k], rtol=0, atol=1e-6)


def test_the_comparison_detects_another_order(run_config, head_run, image_folder, tmp_path):
    """The negative control: another training seed (another order and dropout masks) is far outside the tolerance."""
    other = _train(run_config(image_folder, tmp_path / LPC, LPC, **{**PROBE_RUN, "seed": 2}))
    a, b = [x for _, x, _ in head_run[1].losses], [x for _, x, _ in other[1].losses]
    assert max(abs(x - y) / abs(x) for x, y in zip(a, b)) > 1e-3


def test_feature_loader_reads_the_image_loaders_order_and_shard():
    n, seed, bs = 23, 5, 4
    labels = torch.arange(n)
    for rank, world in ((0, 1), (0, 2), (1, 2)):
        loader = TensorLoader(torch.zeros(n, 3), labels, bs, True, seed, DistInfo(rank, world))
        sampler = ResumableSampler(n, seed, bs, rank, world)  # what data.loaders.make_loader shuffles with
        for epoch in (1, 2):
            loader.sampler.set_epoch(epoch)
            sampler.set_epoch(epoch)
            assert [int(v) for _, y, _ in loader for v in y] == [i for _, i in sampler]
    shard = TensorLoader(torch.zeros(n, 3), labels, bs, dist=DistInfo(1, 2))  # evaluation: its share
    assert [int(v) for _, y, _ in shard for v in y] == list(range(1, n, 2))
    state = torch.get_rng_state()
    list(TensorLoader(torch.zeros(n, 3), labels, bs, True, seed))
    assert torch.equal(state, torch.get_rng_state())  # iterating does not move the global RNG (dropout's)


def test_a_backbone_with_drop_path_is_refused(run_config, image_folder, tmp_path):
    cfg = run_config(image_folder, tmp_path / LPC, LPC, **PROBE_RUN)
    cfg.backbone.args["drop_path_rate"] = 0.1
    with pytest.raises(ConfigError, match=r"blocks\.1\.drop_path1.*\(22 layers\) act differently in training") as e:
        run(cfg)
    assert "\n" not in str(e.value)


def test_sigkill_mid_epoch_then_resume_is_exact(run_config, image_folder, tmp_path):
    """A checkpoint every 3 steps, killed after step 7 (inside epoch 2), resumed: the uninterrupted run's result."""
    ref = run(run_config(image_folder, tmp_path / "ref" / LPC, LPC, **PROBE_RUN, checkpoint_every_steps=3))
    cfg = run_config(image_folder, tmp_path / "killed" / LPC, LPC, **PROBE_RUN, checkpoint_every_steps=3)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path), RESUME_TEST_THREADS=str(torch.get_num_threads()))
    proc = subprocess.run(
        [sys.executable, str(HELPER), json.dumps(cfg.to_dict()), "step", "7"], env=env, capture_output=True
    )
    assert proc.returncode == -9, proc.stderr.decode()[-2000:]  # SIGKILL
    out = Path(cfg.out_dir)
    assert (out / CHECKPOINT_FILE).exists() and not (out / "summary.json").exists()
    assert main(["train", "--resume", str(out), "--quiet"]) == 0
    done = json.loads((out / "summary.json").read_text())
    for key in ("test_acc", "test_top5", "test_acc_last", "best_val_acc", "best_epoch"):
        assert done[key] == getattr(ref, key), key
    ref_dir = tmp_path / "ref" / LPC
    ma, mb = _epoch_lines(ref_dir), _epoch_lines(out)
    for x, y in zip(ma, mb, strict=True):  # a resumed epoch lists the step losses after its checkpoint
        sa, sb = x.pop("step_loss"), y.pop("step_loss")
        assert sb and sa[len(sa) - len(sb) :] == sb
    assert ma == mb
    a, _ = load_tensors(ref_dir / ADAPTER_FILE)
    b, _ = load_tensors(out / ADAPTER_FILE)
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_extract_features_are_the_classifier_input(tiny_vit):
    model = tiny_vit()
    loader = [(X, torch.tensor([0, 1]), 0)]
    f, y, skipped, _ = extract_features(model, loader, torch.device("cpu"))
    assert f.shape == (2, 192) and skipped == 0 and y.tolist() == [0, 1]
    torch.testing.assert_close(model.head(f), model(X))


def test_linear_probe_cached_equals_head_without_augmentation(run_config, image_folder, tmp_path):
    train = {"epochs": 2, "batch_size": 16, "seed": 0}
    head = run(run_config(image_folder, tmp_path / "head", "head", data={"subset": 16, "augment": False}, **train))
    # augmentation is off by definition of the method
    cached = run(run_config(image_folder, tmp_path / LPC, LPC, data={"subset": 16}, **train))
    assert cached.protocol["augment"] == "none" and cached.trainable_params == head.trainable_params
    assert cached.test_acc == head.test_acc and cached.best_val_acc == head.best_val_acc
    a, _ = load_tensors(tmp_path / "head" / ADAPTER_FILE)
    b, meta = load_tensors(tmp_path / LPC / ADAPTER_FILE)
    assert set(a) == set(b) == {"head.weight", "head.bias"} and meta["method"] == "linear-probe-cached"
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-6)


@pytest.mark.slow
def test_linear_probe_cached_equals_head_without_augmentation_over_multi_batch_epochs(
    run_config, image_folder, tmp_path
):
    """Same seed, 4 batches per epoch, 3 epochs: the probe on cached features is head --no-augment, step by step."""
    train = {"epochs": 3, "batch_size": 4, "seed": 1}
    head = run(run_config(image_folder, tmp_path / "head", "head", data={"subset": 16, "augment": False}, **train))
    cached = run(run_config(image_folder, tmp_path / LPC, LPC, data={"subset": 16}, **train))
    assert cached.test_acc == head.test_acc and cached.best_val_acc == head.best_val_acc
    a, _ = load_tensors(tmp_path / "head" / ADAPTER_FILE)
    b, _ = load_tensors(tmp_path / LPC / ADAPTER_FILE)
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-6)
