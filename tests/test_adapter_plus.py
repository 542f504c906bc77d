"""Adapter+ (methods/adapter_plus.py): a Houlsby-initialised bottleneck with a per-channel scale and drop-path
after each block. Its start is close to the backbone's logits but not equal; the difference is bounded."""

import json

import pytest
import timm
import torch

from adaptertune.methods import METHODS, build_method
from adaptertune.methods.adapter_plus import (
    HOULSBY_STD,
    AdapterPlusOptions,
    AdapterPlusSlot,
    adapter_plus_param_count,
)
from adaptertune.methods.flops import step_flops, vit_geometry
from helpers import trainable_names
from petl_checks import VARIANTS, X, resume_runs, tasks_share_a_backbone, variant_vit

# the default suite runs the plain ViT; the other variants with -m slow
VARIANT_PARAMS = ["cls", *(pytest.param(v, marks=pytest.mark.slow) for v in VARIANTS if v != "cls")]


@pytest.fixture(scope="module")
def vit_b():
    model = timm.create_model("vit_base_patch16_224", pretrained=False, num_classes=100)
    return build_method("adapter-plus", model, None)


def test_trainable_parameters_on_vit_b_match_methods_md(vit_b):
    n = sum(p.numel() for p in vit_b.parameters() if p.requires_grad)
    assert n == 165_984 + 76_900 == adapter_plus_param_count(12, 768, 8) + 76_900
    ad = vit_b.blocks[0].adapters["default"]
    for w in (ad.down.weight, ad.up.weight):  # trunc-normal std 0.01 at +-2 sigma: std of the truncated law 0.88 sigma
        w = w.detach()
        assert w.abs().max() <= 2 * HOULSBY_STD and 0.0080 < float(w.std()) < 0.0095
    assert torch.equal(ad.scale, torch.ones(768)) and not ad.down.bias.any() and not ad.up.bias.any()


@pytest.mark.parametrize("variant", VARIANT_PARAMS)
def test_start_is_close_but_not_exact_and_bounded(variant):
    model = build_method("adapter-plus", variant_vit(variant), None).eval()
    with torch.no_grad():
        out = model(X)
        AdapterPlusSlot.activate(model, None)  # the plain backbone
        ref = model(X)
    assert not torch.equal(out, ref)  # Houlsby init: not the identity
    assert float((out - ref).abs().max()) < 0.05 * float(ref.abs().max())
    # per block: |c * up(gelu(down h))| <= r * 0.02 * max|gelu(down h)| and |down h| <= 0.02 * ||h||_1 (truncation)
    blk, ad = model.blocks[3], model.blocks[3].adapters["default"]
    with torch.no_grad():
        h = blk.drop_path2(blk.ls2(blk.mlp(blk.norm2(x1 := torch.randn(2, 5, 192)))))  # any block output will do
        h = x1 + h
        a = ad.down(h)
        assert float(a.abs().max()) <= 2 * HOULSBY_STD * float(h.abs().sum(-1).max()) + 1e-6
        delta = ad.residual(h) - h
        bound = ad.rank * 2 * HOULSBY_STD * float(torch.nn.functional.gelu(a).abs().max())
        assert 0 < float(delta.abs().max()) <= bound + 1e-6


def test_forward_is_the_formula_and_drop_path_is_per_sample():
    model = build_method("adapter-plus", variant_vit(), {"placement": [0]}).eval()
    ad = model.blocks[0].adapters["default"]
    with torch.no_grad():
        ad.scale.uniform_(0.5, 2.0)
        x = torch.randn(4, 5, 192)
        x2 = x + model.blocks[0].ls1(model.blocks[0].attn(model.blocks[0].norm1(x)))
        x2 = x2 + model.blocks[0].ls2(model.blocks[0].mlp(model.blocks[0].norm2(x2)))
        want = x2 + ad.scale * ad.up(torch.nn.functional.gelu(ad.down(x2)))
        torch.testing.assert_close(model.blocks[0](x), want)
        full = ad(x2.repeat(4, 1, 1))
        ad.train()
        ad.drop_path.drop_prob = 0.5
        torch.manual_seed(1)
        d = ad(x2.repeat(4, 1, 1))  # 16 samples: each dropped whole (0) or kept and scaled by 1 / keep
        kept = [bool((d[i] != 0).any()) for i in range(16)]
        assert any(kept) and not all(kept)
        for i in range(16):
            torch.testing.assert_close(d[i], full[i] * 2 if kept[i] else torch.zeros_like(d[i]))


def test_bf16_autocast_keeps_the_stream_dtype():
    model = build_method("adapter-plus", variant_vit(), None).eval()
    with torch.no_grad():
        full = model.forward_features(X)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = model.forward_features(X)
            AdapterPlusSlot.activate(model, None)
            ref = model.forward_features(X)
    assert out.dtype == ref.dtype == full.dtype  # the update is cast to the residual stream's dtype
    torch.testing.assert_close(out, full, rtol=0.05, atol=0.05)


def test_only_adapters_and_head_train_and_the_backbone_stays():
    model = build_method("adapter-plus", variant_vit(), {"placement": "last:2"}).train()
    names = trainable_names(model)
    tensors = ("scale", "down.weight", "down.bias", "up.weight", "up.bias")
    assert names == [
        *(f"blocks.{i}.adapters.default.{k}" for i in (10, 11) for k in tensors),
        "head.weight",
        "head.bias",
    ]
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model(X).logsumexp(-1).sum().backward()
    opt.step()
    assert all(torch.equal(p, frozen[n]) for n, p in model.named_parameters() if n in frozen)
    assert METHODS.get("adapter-plus").defaults == {"lr": 1e-3, "weight_decay": 1e-4}


def test_cost_is_adaptertunes_bottleneck_with_a_free_scale():
    """FLOPs: AdapterTune's matmuls at the same rank and placement (the scale c is elementwise); the parameter
    formula adds c; the cache prefix ends at the first placed block."""
    info, options = METHODS.get("adapter-plus"), AdapterPlusOptions(rank=4, placement="last:2")
    model = build_method("adapter-plus", variant_vit(), options)
    geom = vit_geometry(model)
    assert info.step_flops(geom, options) == step_flops(geom, "adapter", {"rank": 4, "placement": "last:2"})
    n = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert info.trainable_params(geom, options, 10) == n == 2 * (2 * 192 * 4 + 4 + 2 * 192) + 193 * 10
    assert info.frozen_prefix(model, options) == 10


def test_two_tasks_share_a_backbone_exactly(tiny_run, tmp_path):
    specs = {"a": ("adapter-plus", {"rank": 4}), "b": ("adapter-plus", {"placement": "last:3"})}
    tasks_share_a_backbone(tiny_run, tmp_path, specs, ["a", "b", "a"])


def test_resume_after_one_epoch_is_bitwise(tmp_path):
    # 14 train images, batch 7: 2 steps per epoch; stopped in epoch 2, after the epoch-1 checkpoint; drop-path draws
    # from the restored RNG
    options = {"rank": 4, "placement": "last:3", "drop_path": 0.5}
    ta, tb, _ = resume_runs(tmp_path, "adapter-plus", options, n_classes=2, stop_at=3, train={"batch_size": 7})
    assert ta.keys() == tb.keys() and any(".scale" in k for k in ta)
    assert all(torch.equal(ta[k], tb[k]) for k in ta)
    assert json.loads((tmp_path / "cut" / "summary.json").read_text())["status"] == "success"
