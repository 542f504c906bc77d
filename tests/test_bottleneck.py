"""Pfeiffer and Houlsby adapters (methods/bottleneck.py): sequential bottlenecks on the attention / MLP outputs."""

import copy

import pytest
import timm
import torch

from adaptertune.engine import load_tensors
from adaptertune.errors import CheckpointError
from adaptertune.methods import METHODS, build_method
from adaptertune.methods.bottleneck import BottleneckOptions, HoulsbySlot, PfeifferSlot
from helpers import trainable_names
from petl_checks import VARIANTS, X, resume_runs, tasks_share_a_backbone, train_steps, variant_vit


@pytest.fixture(scope="module")
def vit_b():
    torch.manual_seed(0)
    return timm.create_model("vit_base_patch16_224", pretrained=False, num_classes=100)


@pytest.mark.parametrize("method,params", [("pfeiffer", 156_768), ("houlsby", 313_536)])
def test_trainable_parameters_on_vit_b16_match_methods_md(vit_b, method, params):
    assert BottleneckOptions() == BottleneckOptions(rank=8, scale=1.0, dropout=0.1)
    model = build_method(method, copy.deepcopy(vit_b))
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == params + 76_900


@pytest.mark.parametrize("variant", VARIANTS)
def test_pfeiffer_starts_exactly_at_the_backbone(variant):
    plain = variant_vit(variant)
    keys = set(plain.state_dict())
    model = build_method("pfeiffer", variant_vit(variant), {"scale": 5})
    with torch.no_grad():
        assert torch.equal(model(X), plain(X))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert torch.equal(model(X), plain(X))
    assert {k for k in model.state_dict() if ".pfeiffer.default.mlp." not in k} == keys
    assert list(model.blocks[0].pfeiffer["default"]) == ["mlp"]
    assert len(model.blocks[0].attn._forward_hooks) == 0  # no hook on the attention


@pytest.mark.parametrize("variant", VARIANTS)
def test_houlsby_does_not_start_at_the_backbone_but_its_wiring_adds_zero_at_zero(variant):
    """Houlsby's Xavier up-projection moves the logits at step 0; zeroing it (weight, bias) gives them back."""
    plain = variant_vit(variant)
    model = build_method("houlsby", variant_vit(variant))
    ad = [b.houlsby["default"][s] for b in model.blocks for s in ("attn", "mlp")]
    biases = torch.cat([t for m in ad for t in (m.down.bias, m.up.bias)])
    assert 0 < biases.abs().max() < 1e-5 and all(m.up.weight.abs().min() > 0 for m in ad)  # N(0, 1e-6), Xavier
    with torch.no_grad():
        assert not torch.allclose(model(X), plain(X))
        for m in ad:
            m.up.weight.zero_()
            m.up.bias.zero_()
        assert torch.equal(model(X), plain(X))


def test_houlsby_forward_written_out():
    model = build_method("houlsby", variant_vit("layerscale"), {"scale": 0.5})
    blk = model.blocks[2]
    att, mlp = blk.houlsby["default"]["attn"], blk.houlsby["default"]["mlp"]

    def ad(m, z):
        return z + 0.5 * m.up(torch.relu(m.down(z)))

    with torch.no_grad():
        x = torch.randn(2, 65, 192)
        x1 = x + blk.ls1(ad(att, blk.attn(blk.norm1(x))))  # inside the LayerScale
        want = x1 + blk.ls2(ad(mlp, blk.mlp(blk.norm2(x1))))
        torch.testing.assert_close(blk(x), want)


@pytest.mark.parametrize("method", ["pfeiffer", "houlsby"])
def test_only_adapters_and_head_train_and_the_backbone_stays(method):
    model = build_method(method, variant_vit("reg"), {"rank": 4}).train()
    names = trainable_names(model)
    per_block = 8 if method == "houlsby" else 4
    assert len(names) == 2 + 12 * per_block and all(f".{method}.default." in n for n in names if "head" not in n)
    frozen = {
        k: v.clone() for k, v in model.state_dict().items() if f".{method}." not in k and not k.startswith("head")
    }
    train_steps(model, steps=2)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in frozen.items())
    assert model.blocks[4].get_submodule(method)["default"]["mlp"].up.weight.abs().sum() > 0


def test_houlsby_and_pfeiffer_tasks_share_a_backbone(tiny_run, tmp_path):
    specs = {"h": ("houlsby", {"rank": 4}), "p": ("pfeiffer", {"rank": 2}), "h2": ("houlsby", {"rank": 2})}
    mt, files, _ = tasks_share_a_backbone(tiny_run, tmp_path, specs, ["h", "p", "h2", "p", "h", "h2"])
    mt.remove_task("h")
    assert HoulsbySlot.set_names(mt.backbone) == ["h2"] and PfeifferSlot.set_names(mt.backbone) == ["p"]
    tensors, _ = load_tensors(files[1])
    rest = {k: v for k, v in tensors.items() if not k.startswith("head.")}
    with pytest.raises(CheckpointError, match="do not match the rebuilt set"):  # a Pfeiffer file read as Houlsby
        METHODS.get("houlsby").attach(mt.backbone, "wrong", BottleneckOptions(rank=2), rest, "f")
    assert HoulsbySlot.set_names(mt.backbone) == ["h2"]


@pytest.mark.slow  # three tiny training runs (over 10 s on the shared machine, as every resume test here)
def test_resume_after_one_epoch_is_bitwise(tmp_path):
    """2 epochs in one go == 1 epoch, stopped, resumed for the second (the adapter dropout draws from the RNG)."""
    train = {"batch_size": 7, "log_every_steps": 1}  # 14 train images + 2 val, batch 7: 2 steps per epoch
    # stopped at the first step of epoch 2
    a, b, start = resume_runs(tmp_path, "houlsby", {"rank": 2}, n_classes=2, size=32, stop_at=3, train=train)
    assert start == 2  # from the end-of-epoch-1 checkpoint
    assert a.keys() == b.keys() and len(a) == 2 + 12 * 8
    assert all(torch.equal(a[k], b[k]) for k in a)
