"""DiffFit (methods/difffit.py): BitFit + LN tuning + residual-branch scales, folded into proj / fc2 on merge."""

import pytest
import torch

from adaptertune.methods import build_method
from petl_checks import (
    HEAD_100,
    VARIANTS,
    X,
    frozen_unchanged_after_training,
    merge_to_plain_timm,
    n_trainable,
    resumed_equals_uninterrupted,
    train_steps,
    variant_vit,
    vit_b,
)

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: more threads only fight over a busy machine


def test_difffit_size_on_vit_b():
    """BitFit's 102,912 biases + 19,200 norm weights + 2 x 768 scales per block."""
    n = n_trainable(build_method("difffit", vit_b(), None))
    assert n == 140_544 + HEAD_100 == 102_912 + 19_200 + 12 * 2 * 768 + HEAD_100


@pytest.mark.parametrize("variant", VARIANTS)
def test_starts_bitwise_and_keeps_backbone_keys(variant):
    plain = variant_vit(variant)
    keys, ref = set(plain.state_dict()), plain(X)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ref_bf16 = plain(X)
    model = build_method("difffit", variant_vit(variant), None)
    assert torch.equal(model(X), ref)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert torch.equal(model(X), ref_bf16)
    assert {k for k in model.state_dict() if ".difffit." not in k} == keys


def test_what_trains():
    model = build_method("difffit", variant_vit("cls"), None)
    names = {n for n, p in model.named_parameters() if p.requires_grad}
    assert {"blocks.0.attn.qkv.bias", "blocks.0.norm1.weight", "norm.weight", "patch_embed.proj.bias"} <= names
    assert {"blocks.5.difffit.default.gamma1", "blocks.5.difffit.default.gamma2", "head.weight"} <= names
    assert not any(n.endswith(".weight") and "norm" not in n and not n.startswith("head.") for n in names)
    assert frozen_unchanged_after_training(model) == []


def test_scales_multiply_the_branches():
    model = build_method("difffit", variant_vit("layerscale"), None)
    blk = model.blocks[0]
    with torch.no_grad():
        blk.difffit["default"].gamma1.uniform_(0.5, 1.5)
        blk.difffit["default"].gamma2.uniform_(0.5, 1.5)
        x = torch.randn(2, 5, 192)
        g1, g2 = blk.difffit["default"].gamma1, blk.difffit["default"].gamma2
        x1 = x + g1 * blk.ls1.gamma * blk.attn(blk.norm1(x))
        torch.testing.assert_close(blk(x), x1 + g2 * blk.ls2.gamma * blk.mlp(blk.norm2(x1)))


@pytest.mark.parametrize("variant", VARIANTS)
def test_merge_folds_into_plain_timm(variant):
    model = train_steps(build_method("difffit", variant_vit(variant), None))
    assert merge_to_plain_timm("difffit", model, variant) <= 1e-5
    assert not any(m._forward_hooks for m in model.modules())


def test_resume_is_exact(tmp_path):
    assert resumed_equals_uninterrupted(tmp_path, "difffit", None) == []
