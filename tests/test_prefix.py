"""train.cache_prefix (engine/prefix.py, runs/prefix_cache.py): cached frozen-prefix tokens train exactly as
the uncached model does."""

import json

import numpy as np
import pytest
import torch
from torch import nn

from adaptertune.config import RunConfig, TrainConfig
from adaptertune.data.base import ArraySource, SplitView
from adaptertune.data.loaders import make_loader
from adaptertune.data.transforms import build_transforms
from adaptertune.engine import Selection, fit
from adaptertune.engine.cached import TensorLoader
from adaptertune.engine.prefix import PrefixTail, cacheable_prefix, extract_prefix, prefix_tokens
from adaptertune.errors import ConfigError
from adaptertune.methods import METHODS, Method, build_method
from adaptertune.methods.adapter import AdapterConfig
from adaptertune.resolve import resolve_train_config
from adaptertune.runs import run

CPU = torch.device("cpu")
SMALL = {"img_size": 32, "patch_size": 8, "embed_dim": 32, "depth": 4, "num_heads": 2}
DC = {"input_size": (3, 32, 32), "interpolation": "bicubic", "mean": (0.5,) * 3, "std": (0.25,) * 3}


def small_vit(num_classes=4, seed=0, **kw):
    import timm

    torch.manual_seed(seed)
    return timm.create_model("vit_tiny_patch16_224", num_classes=num_classes, **{**SMALL, **kw})


def adapted(placement, seed=0, method="adapter", **kw):
    model = small_vit(seed=seed, **kw)
    torch.manual_seed(seed)
    return build_method(method, model, AdapterConfig(rank=2, placement=placement) if method == "adapter" else None)


def cached_blocks(method, options=None, **kw):
    """What train.cache_prefix caches for ``method``: the method's frozen prefix, checked on the built model."""
    info = METHODS.get(method)
    options = info.resolve(options)
    model = info.build(small_vit(**kw), options)
    return cacheable_prefix(model, info.frozen_prefix(model, options))


def test_the_cached_prefix_is_the_methods():
    assert cached_blocks("adapter", {"placement": "last:2"}) == 2
    assert cached_blocks("adapter", {"placement": "1,3"}) == 1
    assert cached_blocks("parallel", {"placement": "last:1"}) == 3
    assert cached_blocks("adapter") == 0
    assert cached_blocks("head") == 4  # only the head trains
    assert cached_blocks("full") == 0
    assert cached_blocks("bitfit") == 0  # the patch embedding's bias trains
    # timm drop-path rates rise linearly from 0 at block 0: block 1 is the first random one
    assert cached_blocks("adapter", {"placement": "last:2"}, drop_path_rate=0.1) == 1


def test_the_cached_prefix_of_lora():
    pytest.importorskip("peft")
    assert cached_blocks("lora", {"placement": "last:3", "rank": 2}) == 1
    assert cached_blocks("lora", {"placement": "2,3", "targets": "qkv+mlp", "rank": 2}) == 2
    assert cached_blocks("lora", {"rank": 2}) == 0


class _Probe(nn.Module):
    """A frozen, deterministic op the hook runs in every block (its output does not change between epochs)."""

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h * 0.5


class _HookedBefore(Method):
    """Hooks on every block; only block ``k``'s hook trains (a scale) and only it and the head train."""

    name, description, k = "hooked-before", "test: frozen hooks before block k", 2

    def build(self, model: nn.Module, options: None) -> nn.Module:
        model.requires_grad_(False)
        model.head.requires_grad_(True)
        self.scale = nn.Parameter(torch.ones(model.embed_dim))
        for i, blk in enumerate(model.blocks):
            trains = i == self.k
            if trains:
                blk.scale = self.scale
            blk.register_forward_hook(lambda m, a, out, t=trains: out * m.scale if t else _Probe()(out))
        return model

    def frozen_prefix(self, model: nn.Module, options: None) -> int:
        return self.k


def test_a_method_with_frozen_hooks_before_block_k_caches_k_blocks():
    method = _HookedBefore()
    model = method.build(small_vit(), None).eval()
    assert Method.frozen_prefix(method, model, None) == 0  # the default counts any hook as touched
    k = cacheable_prefix(model, method.frozen_prefix(model, None))
    assert k == 2
    x = torch.randn(3, 3, 32, 32)
    assert torch.allclose(PrefixTail(model, k)(prefix_tokens(model, x, k)), model(x), atol=1e-6)


def test_a_wrong_frozen_prefix_is_refused():
    model = adapted("1,3")
    with pytest.raises(ConfigError, match="first 2 blocks stay frozen, but block 1 trains"):
        cacheable_prefix(model, 2)
    model.pos_embed.requires_grad_(True)  # a tensor before block 0 (VPT's prompts, SSF on the patch embedding)
    with pytest.raises(ConfigError, match="but the embedding trains"):
        cacheable_prefix(model, 1)
    assert Method.frozen_prefix(METHODS.get("adapter"), model, None) == 0  # the default sees it too


def test_prefix_then_tail_is_the_model():
    model = adapted("last:2").eval()
    x = torch.randn(3, 3, 32, 32)
    assert torch.allclose(PrefixTail(model, 2)(prefix_tokens(model, x, 2)), model(x), atol=1e-6)


def test_cached_prefix_trains_like_the_uncached_model():
    # 2 epochs, augmentation off, adapters on the last 2 of 4 blocks: same losses and trained tensors
    rng = np.random.default_rng(0)
    src = ArraySource(rng.integers(0, 256, (20, 28, 28), dtype=np.uint8), [i % 4 for i in range(20)])
    eval_tf = build_transforms(DC, augment=False)[1]
    train, test = SplitView(src, np.arange(16), eval_tf), SplitView(src, np.arange(16, 20), eval_tf)
    cfg = TrainConfig(epochs=2, batch_size=4, lr=1e-2, weight_decay=0.0, seed=1, log_every_steps=1, device="cpu")
    cfg, last = resolve_train_config(cfg), Selection.LAST_EPOCH

    plain = adapted("last:2")
    ref = fit(
        plain, make_loader(train, 4, 0, CPU, True, 1), None, make_loader(test, 4, 0, CPU), cfg, CPU, selection=last
    )

    model = adapted("last:2")
    tok = {name: extract_prefix(model, 2, make_loader(v, 4, 0, CPU), CPU) for name, v in (("tr", train), ("te", test))}
    loaders = TensorLoader(*tok["tr"][:2], 4, shuffle=True, seed=1), None, TensorLoader(*tok["te"][:2], 4)
    got = fit(PrefixTail(model, 2), *loaders, cfg, CPU, selection=last)
    for a, b in zip(ref.history, got.history, strict=True):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-5, abs=1e-6)
        assert a["train_acc"] == b["train_acc"]
    assert ref.test["loss"] == pytest.approx(got.test["loss"], rel=1e-5)
    assert {f"model.{k}" for k in ref.best_state} == set(got.best_state)
    for k, v in ref.best_state.items():
        assert torch.allclose(v, got.best_state[f"model.{k}"], atol=1e-5), k


def test_cache_prefix_refuses_augmentation():
    with pytest.raises(ConfigError, match=r"cache_prefix.*augment"):
        RunConfig.from_dict({"train": {"cache_prefix": True}, "data": {"augment": True}})
    RunConfig.from_dict({"train": {"cache_prefix": True}})  # augmentation is off by default


def _folder_run(tmp_path, image_folder, placement, method="adapter"):
    cfg = {
        "backbone": {"name": "vit_tiny_patch16_224", "args": SMALL, "pretrained": False},
        "data": {"name": "imagefolder", "root": str(image_folder), "num_workers": 0, "augment": False},
        "method": method,
        "train": {"epochs": 1, "batch_size": 8, "device": "cpu", "cache_prefix": True},
        "out_dir": str(tmp_path / "run"),
    }
    if placement is not None:
        cfg["adapter"] = {"rank": 2, "placement": placement}
    return run(RunConfig.from_dict(cfg))


def test_run_with_cache_prefix_writes_the_adapter(tmp_path, image_folder):
    summary = _folder_run(tmp_path, image_folder, "last:2")
    assert summary.status.value == "success"
    saved = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert saved["trainable_params"] == summary.trainable_params


@pytest.mark.parametrize(("placement", "method"), [("all", "adapter"), (None, "linear-probe-cached")])
def test_cache_prefix_refuses_block_0_and_cached_methods(tmp_path, image_folder, placement, method):
    with pytest.raises(ConfigError, match="cache_prefix"):
        _folder_run(tmp_path, image_folder, placement, method)
