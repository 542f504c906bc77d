"""Convpass (methods/convpass.py): conv bottlenecks beside attention and MLP, added outside the LayerScale."""

import pytest
import timm
import torch

from adaptertune.errors import ConfigError
from adaptertune.methods import METHODS, build_method
from adaptertune.methods.convpass import ConvpassOptions, ConvpassSlot, quick_gelu
from helpers import trainable_names
from petl_checks import VARIANTS, X, resume_runs, tasks_share_a_backbone, train_steps, variant_vit


def test_trainable_parameters_on_vit_b16_match_methods_md():
    torch.manual_seed(0)
    model = build_method("convpass", timm.create_model("vit_base_patch16_224", pretrained=False, num_classes=100))
    assert ConvpassOptions() == ConvpassOptions(rank=8, scale=1.0, dropout=0.1, conv_init="identity")
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == 327_552 + 76_900


@pytest.mark.parametrize("conv_init", ["identity", "xavier"])
@pytest.mark.parametrize("variant", VARIANTS)
def test_starts_exactly_at_the_backbone(variant, conv_init):
    plain = variant_vit(variant)
    keys = set(plain.state_dict())
    model = build_method("convpass", variant_vit(variant), {"conv_init": conv_init, "scale": 10})
    with torch.no_grad():
        assert torch.equal(model(X), plain(X))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert torch.equal(model(X), plain(X))
    assert {k for k in model.state_dict() if ".convpass." not in k} == keys
    conv = model.blocks[0].convpass["default"].attn.conv.weight
    if conv_init == "identity":  # the centre tap is the identity, the other taps zero
        assert torch.equal(conv[:, :, 1, 1], torch.eye(8)) and conv.abs().sum() == 8


def manual_block(blk: torch.nn.Module, x: torch.Tensor, prefix: int) -> torch.Tensor:
    """x1 = x + ls1(attn(h)) + s CP(h); x2 = x1 + ls2(mlp(g)) + s CP'(g), CP written out (prefix = centre tap)."""
    pair = blk.convpass["default"]

    def cp(branch, t):
        z = quick_gelu(branch.down(t))  # (B, T, r)
        b, _, r = z.shape
        grid = z[:, prefix:].transpose(1, 2).reshape(b, r, 8, 8)  # the tiny ViT's 8x8 patch grid
        conv = torch.nn.functional.conv2d(grid, branch.conv.weight, branch.conv.bias, padding=1)
        centre = z[:, :prefix] @ branch.conv.weight[:, :, 1, 1].T + branch.conv.bias
        return branch.up(quick_gelu(torch.cat([centre, conv.flatten(2).transpose(1, 2)], 1)))

    h = blk.norm1(x)
    x1 = x + blk.ls1(blk.attn(h)) + pair.scale * cp(pair.attn, h)
    g = blk.norm2(x1)
    return x1 + blk.ls2(blk.mlp(g)) + pair.scale * cp(pair.mlp, g)


@pytest.mark.parametrize("variant,prefix", [("layerscale", 1), ("reg", 5), ("avg", 0)])
def test_branches_sit_beside_attn_and_mlp_outside_the_layerscale(variant, prefix):
    model = build_method("convpass", variant_vit(variant), {"scale": 2.0, "conv_init": "xavier"})
    blk = model.blocks[3]
    with torch.no_grad():
        for p in blk.convpass["default"].parameters():
            p.normal_(0, 0.1)
        x = torch.randn(2, 64 + prefix, 192)
        adapted = blk(x)
        torch.testing.assert_close(adapted, manual_block(blk, x, prefix), rtol=1e-5, atol=1e-5)
        ConvpassSlot.activate(model, None)
        assert not torch.allclose(adapted, blk(x))


def test_bad_options_and_a_changed_grid_are_refused():
    with pytest.raises(ConfigError, match="conv_init"):
        METHODS.get("convpass").resolve({"conv_init": "zero"})
    with pytest.raises(ConfigError, match="rank` 500 is larger"):
        build_method("convpass", variant_vit(), {"rank": 500})
    model = build_method("convpass", variant_vit(), {})
    with pytest.raises(ConfigError, match=r"8x8 patch grid \+ 1 prefix tokens, got 50"):
        model.blocks[0](torch.randn(1, 50, 192))


def test_only_convpass_and_head_train_and_the_backbone_stays():
    model = build_method("convpass", variant_vit("layerscale")).train()
    names = trainable_names(model)
    assert len(names) == 2 + 12 * 2 * 6 and all(".convpass.default." in n for n in names if not n.startswith("head"))
    frozen = {
        k: v.clone() for k, v in model.state_dict().items() if ".convpass." not in k and not k.startswith("head")
    }
    train_steps(model, steps=2)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in frozen.items())
    assert model.blocks[5].convpass["default"].mlp.up.weight.abs().sum() > 0  # the zero up-projection moved
    ConvpassSlot.remove(model)
    assert set(model.state_dict()) == set(variant_vit("layerscale").state_dict())
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())


def test_tasks_share_a_backbone(tiny_run, tmp_path):
    specs = {
        "a": ("convpass", {"rank": 4}),
        "b": ("convpass", {"rank": 2, "scale": 10}),
        "c": ("adapter", {"rank": 4}),
    }
    tasks_share_a_backbone(tiny_run, tmp_path, specs, ["a", "b", "c", "a", "c", "b"])


@pytest.mark.slow  # three tiny training runs (over 10 s on the shared machine, as every resume test here)
def test_resume_after_one_epoch_is_bitwise(tmp_path):
    """2 epochs in one go == 1 epoch, stopped, resumed for the second (the branch dropout draws from the RNG)."""
    train = {"batch_size": 7, "log_every_steps": 1}  # 14 train images + 2 val, batch 7: 2 steps per epoch
    # stopped at the first step of epoch 2
    a, b, start = resume_runs(tmp_path, "convpass", {"rank": 2}, n_classes=2, size=32, stop_at=3, train=train)
    assert start == 2  # from the end-of-epoch-1 checkpoint
    assert a.keys() == b.keys() and len(a) == 2 + 12 * 2 * 6
    assert all(torch.equal(a[k], b[k]) for k in a)
