"""Array datasets transformed in batches (data/batched.py, data/loaders.ArrayLoader) against the PIL path.

Tolerance of the eval view: every pixel within two uint8 levels of PIL's (|dx| * std <= 2/255 after
normalisation), fewer than 1e-3 of them more than one level off, fewer than 5% off at all (measured: ~1e-5
two levels off, on non-square RGB only; ~0.5% one level off). With augmentation the crop boxes and flips are
the PIL path's own, so the same bound holds.
"""

import numpy as np
import pytest
import torch
import torchvision.transforms as T

from adaptertune.config import DataConfig, TrainConfig
from adaptertune.data.base import ArraySource, ImageFiles, SplitView
from adaptertune.data.batched import _crop_box, batch_pipeline
from adaptertune.data.loaders import ArrayLoader, default_workers, make_loader, split_loaders
from adaptertune.data.sampling import mix_seed
from adaptertune.data.transforms import build_transforms
from adaptertune.engine import Selection, fit
from adaptertune.errors import ConfigError
from adaptertune.resolve import resolve_train_config

STD = (0.229, 0.224, 0.225)
DC = {"input_size": (3, 32, 32), "interpolation": "bicubic", "mean": (0.485, 0.456, 0.406), "std": STD}
CPU = torch.device("cpu")


def small_vit(num_classes: int, seed: int = 0) -> torch.nn.Module:
    import timm

    torch.manual_seed(seed)
    return timm.create_model(
        "vit_tiny_patch16_224", img_size=32, patch_size=8, embed_dim=32, depth=3, num_heads=2, num_classes=num_classes
    )


def _source(shape, n=24, seed=0):
    rng = np.random.default_rng(seed)
    # smooth-ish images (a real image is not white noise): upsampled noise plus a gradient
    base = rng.integers(0, 256, (n, *shape), dtype=np.uint8)
    return ArraySource(base, [i % 4 for i in range(n)])


def _views(shape, augment, resize="crop", n=24):
    train_tf, eval_tf = build_transforms(DC, augment=augment, resize=resize)
    src = _source(shape, n)
    idx = np.arange(n)[::-1].copy()  # a view's positions differ from the source's indices
    return SplitView(src, idx, train_tf), SplitView(src, idx, eval_tf)


def _assert_close_to_pil(a: torch.Tensor, b: torch.Tensor) -> None:
    levels = (a - b).abs() * torch.tensor(STD).view(1, 3, 1, 1) * 255
    assert levels.max() <= 2 + 1e-3
    assert (levels > 1 + 1e-3).float().mean() < 1e-3
    assert (levels > 1e-3).float().mean() < 0.05


def test_crop_box_is_torchvision_draw():
    for seed in range(200):
        for h, w in ((28, 28), (25, 40), (8, 8)):
            torch.manual_seed(seed)
            want = T.RandomResizedCrop.get_params(torch.empty(1, h, w), [0.08, 1.0], [3 / 4, 4 / 3])
            assert _crop_box(torch.Generator().manual_seed(seed), h, w, (0.08, 1.0), (3 / 4, 4 / 3)) == want


@pytest.mark.parametrize("shape", [(28, 28), (25, 25), (32, 32, 3), (20, 30, 4)])
@pytest.mark.parametrize("resize", ["crop", "squash"])
def test_eval_view_matches_pil(shape, resize):
    _, view = _views(shape, augment=False, resize=resize)
    batched = make_loader(view, 10, 0, CPU, batched="on")
    per_image = make_loader(view, 10, 0, CPU, batched="off")
    assert isinstance(batched, ArrayLoader) and len(batched) == len(per_image) == 3
    for (xb, yb, sb), (xp, yp, sp) in zip(batched, per_image, strict=True):
        assert xb.shape == xp.shape == (len(yp), 3, 32, 32) and xb.dtype == xp.dtype
        assert torch.equal(yb, yp) and sb == sp == 0
        _assert_close_to_pil(xb, xp)


def test_augmented_batches_are_the_pil_crops_in_the_same_order():
    view, _ = _views((28, 28), augment=True)
    batched = make_loader(view, 8, 0, CPU, shuffle=True, seed=5, batched="on")
    per_image = make_loader(view, 8, 0, CPU, shuffle=True, seed=5, batched="off")
    for epoch in (1, 2):
        for lo in (batched, per_image):
            lo.sampler.set_epoch(epoch)
        for (xb, yb, _), (xp, yp, _) in zip(batched, per_image, strict=True):
            assert torch.equal(yb, yp)
            _assert_close_to_pil(xb, xp)


def test_augmentation_draws_leave_the_global_rng_alone():
    view, _ = _views((28, 28), augment=True)
    loader = make_loader(view, 8, 0, CPU, shuffle=True, seed=1)
    torch.manual_seed(0)
    want = torch.rand(3)
    torch.manual_seed(0)
    list(loader)
    assert torch.equal(torch.rand(3), want)


def test_resume_mid_epoch_batches_are_bitwise_equal():
    view, _ = _views((28, 28), augment=True)
    loader = make_loader(view, 8, 0, CPU, shuffle=True, seed=2)
    loader.sampler.set_epoch(2)
    full = list(loader)
    loader.sampler.set_epoch(2)
    loader.sampler.skip_batches(1)
    tail = list(loader)
    assert len(tail) == len(full) - 1
    for (a, ya, _), (b, yb, _) in zip(full[1:], tail, strict=True):
        assert torch.equal(a, b) and torch.equal(ya, yb)


class _StopAt:
    def __init__(self, step):
        self.step = step

    def on_train_start(self, *a):
        pass

    def on_step(self, step, loss, lr):
        if step == self.step:
            raise KeyboardInterrupt

    def on_epoch_end(self, metrics):
        pass


@pytest.mark.slow
def test_fit_interrupted_mid_epoch_resumes_bitwise(tmp_path):
    # 24 images, batch 8: 3 steps per epoch; checkpoint at step 4 (epoch 2, batch 1), stopped at step 5
    train, ev = _views((28, 28), augment=True, n=24)

    def loaders():
        return make_loader(train, 8, 0, CPU, shuffle=True, seed=4), None, make_loader(ev, 12, 0, CPU)

    cfg = TrainConfig(epochs=2, batch_size=8, lr=1e-3, weight_decay=0.0, seed=4, log_every_steps=1,
                      checkpoint_every_steps=4, device="cpu")  # fmt: skip
    cfg, last = resolve_train_config(cfg), Selection.LAST_EPOCH
    ref = fit(small_vit(4), *loaders(), cfg, CPU, selection=last)
    ckpt = tmp_path / "ckpt.safetensors"
    with pytest.raises(KeyboardInterrupt):
        fit(small_vit(4), *loaders(), cfg, CPU, callbacks=[_StopAt(5)], checkpoint_path=ckpt, selection=last)
    torch.manual_seed(123)  # the resumed run restores the RNG from the checkpoint
    resumed = fit(small_vit(4), *loaders(), cfg, CPU, checkpoint_path=ckpt, resume=True, selection=last)
    timing = {"epoch_seconds", "train_images_per_second"}
    strip = [{k: v for k, v in m.items() if k not in timing} for m in ref.history]
    assert [{k: v for k, v in m.items() if k not in timing} for m in resumed.history] == strip
    for k, v in ref.best_state.items():
        assert torch.equal(v, resumed.best_state[k]), k


def test_translation_refuses_unknown_steps():
    assert batch_pipeline(T.Compose([T.ColorJitter(0.1), T.ToTensor()])) is None
    assert batch_pipeline(T.Compose([T.Resize(8, interpolation=T.InterpolationMode.NEAREST), T.ToTensor()])) is None
    assert batch_pipeline(T.Compose([T.ToTensor(), T.RandomHorizontalFlip()])) is None
    assert batch_pipeline(build_transforms(DC)[0]).random and not batch_pipeline(build_transforms(DC)[1]).random


def test_batched_on_needs_an_array_view(tmp_path):
    files = SplitView(ImageFiles([tmp_path / "a.png"], [0]), [0], build_transforms(DC)[1])
    with pytest.raises(ConfigError, match="data.batched"):
        make_loader(files, 4, 0, CPU, batched="on")
    assert isinstance(make_loader(files, 4, 0, CPU), torch.utils.data.DataLoader)  # auto: per image
    jitter = SplitView(_source((28, 28)), [0, 1], T.Compose([T.ColorJitter(0.1), T.ToTensor()]))
    assert isinstance(make_loader(jitter, 4, 0, CPU), torch.utils.data.DataLoader)


def test_default_workers_share_the_cores():
    assert default_workers(16, 4) == 4 and default_workers(2) == 2 and default_workers(1, 8) == 1
    assert make_loader(SplitView(ImageFiles([], []), [], build_transforms(DC)[1]), 4, None, CPU).num_workers >= 1


def test_seeds_follow_the_per_image_rule():
    # the PIL path seeds item i of epoch e with mix_seed(seed, e, i); the batched draws use the same seed
    pipe = batch_pipeline(build_transforms(DC)[0])
    g = torch.Generator().manual_seed(mix_seed(3, 1, 7))
    torch.manual_seed(mix_seed(3, 1, 7))
    box = T.RandomResizedCrop.get_params(torch.empty(1, 28, 28), [0.08, 1.0], [3 / 4, 4 / 3])
    flip = bool(torch.rand(1) < 0.5)
    assert pipe.draw(g, 28, 28) == [box, flip]


def test_float_resize_path_is_within_two_levels_of_pil():
    # the path a CUDA device takes (float, separable), checked on the CPU through float input
    from PIL import Image

    from adaptertune.data.batched import resize_levels

    a = np.random.default_rng(1).integers(0, 256, (6, 32, 32, 3), dtype=np.uint8)
    for s in (20, 36, 64):
        pil = np.stack([np.asarray(Image.fromarray(x).resize((s, s), Image.BICUBIC)) for x in a]).astype(float)
        got = resize_levels(torch.from_numpy(a).permute(0, 3, 1, 2).float(), (s, s), "bicubic")
        d = np.abs(got.permute(0, 2, 3, 1).numpy() - pil)
        assert d.max() <= 2 and (d > 1).mean() < 1e-3


def test_empty_view_gives_no_batches():
    _, view = _views((28, 28), augment=False)
    empty = SplitView(view.source, np.arange(0), view.transform)
    assert list(make_loader(empty, 4, 0, CPU, batched="on")) == []


def test_pooled_array_sources_are_batched():
    # cross-validation pools train and test (ConcatSource): still one array, same images as the PIL path
    from adaptertune.data.base import ConcatSource

    eval_tf = build_transforms(DC, augment=False)[1]
    pooled = ConcatSource([_source((28, 28), 10, seed=1), _source((28, 28), 6, seed=2)])
    view = SplitView(pooled, np.array([15, 0, 9, 10, 3]), eval_tf)
    batched = make_loader(view, 8, 0, CPU, batched="on")
    (xb, yb, _), (xp, yp, _) = next(iter(batched)), next(iter(make_loader(view, 8, 0, CPU, batched="off")))
    assert torch.equal(yb, yp)
    _assert_close_to_pil(xb, xp)


def test_split_loaders_decide_auto_for_every_split(tmp_path):
    train, ev = _views((28, 28), augment=True)
    files = SplitView(ImageFiles([tmp_path / "a.png"], [0]), [0], build_transforms(DC)[1])
    data = DataConfig(name="x", num_workers=0)  # batched: auto
    loaders, batched = split_loaders((train, ev, ev), data, 8, CPU, seed=3)
    assert batched == "on" and all(isinstance(lo, ArrayLoader) for lo in loaders)
    loaders, batched = split_loaders((train, None, None), data, 8, CPU, seed=3)
    assert batched == "on" and loaders[1:] == (None, ())  # no val split: None; no test split: an empty loader
    loaders, batched = split_loaders((train, ev, files), data, 8, CPU, seed=3)  # one split cannot: all per image
    assert batched == "off" and all(isinstance(lo, torch.utils.data.DataLoader) for lo in loaders)
    off = DataConfig(name="x", num_workers=0, batched="off")
    loaders, batched = split_loaders((train, ev, ev), off, 8, CPU, seed=3)
    assert batched == "off" and not any(isinstance(lo, ArrayLoader) for lo in loaders)
    xa, ya, _ = next(iter(loaders[0]))  # the train loader: shuffled, seeded
    xb, yb, _ = next(iter(make_loader(train, 8, 0, CPU, True, 3, batched="off")))
    assert torch.equal(xa, xb) and torch.equal(ya, yb)
