"""SSF (methods/ssf.py): a per-channel scale and shift at 8 points, folded into the layers before them."""

import pytest
import torch

from adaptertune.errors import ConfigError
from adaptertune.methods import METHODS, build_method
from adaptertune.methods.ssf import SSFOptions
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


def test_ssf_size_on_vit_b():
    """22 D per block (norm1, qkv 3D, proj, norm2, fc1 4D, fc2; gamma and beta) + the embedding and final norm."""
    model = build_method("ssf", vit_b(), None)
    assert n_trainable(model) == 205_824 + HEAD_100 == 12 * 22 * 768 + 4 * 768 + HEAD_100


@pytest.mark.parametrize("variant", VARIANTS)
def test_identity_init_starts_bitwise_and_keeps_backbone_keys(variant):
    plain = variant_vit(variant)
    keys, ref = set(plain.state_dict()), plain(X)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ref_bf16 = plain(X)
    model = build_method("ssf", variant_vit(variant), SSFOptions(init="identity"))
    assert torch.equal(model(X), ref)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert torch.equal(model(X), ref_bf16)
    assert {k for k in model.state_dict() if ".ssf." not in k and not k.startswith("ssf.")} == keys


def test_normal_init_is_mai_et_al_s_and_moves_the_logits():
    """gamma ~ N(1, 0.02), beta ~ N(0, 0.02): the model does not start at the backbone's logits."""
    torch.manual_seed(0)
    model = build_method("ssf", variant_vit("cls"), None)
    gammas = torch.cat([p for n, p in model.named_parameters() if n.endswith(".gamma")])
    betas = torch.cat([p for n, p in model.named_parameters() if n.endswith(".beta")])
    assert abs(gammas.mean() - 1) < 0.005 and abs(gammas.std() - 0.02) < 0.002
    assert abs(betas.mean()) < 0.005 and abs(betas.std() - 0.02) < 0.002
    assert not torch.allclose(model(X), variant_vit("cls")(X))


def test_points_scale_the_outputs_they_name():
    model = build_method("ssf", variant_vit("cls"), SSFOptions(init="identity"))
    blk, ss = model.blocks[0], model.blocks[0].ssf["default"]
    with torch.no_grad():
        ss["qkv"].gamma.fill_(2.0)
        ss["fc1"].beta.fill_(0.5)
    x = torch.randn(2, 5, 192)
    assert ss["qkv"].gamma.shape == (576,) and ss["fc1"].gamma.shape == (768,)
    with torch.no_grad():
        torch.testing.assert_close(blk.attn.qkv(x), 2 * torch.nn.functional.linear(x, *blk.attn.qkv.parameters()))
        torch.testing.assert_close(blk.mlp.fc1(x), torch.nn.functional.linear(x, *blk.mlp.fc1.parameters()) + 0.5)


def test_only_ssf_and_head_train_and_the_backbone_stays_frozen():
    model = build_method("ssf", variant_vit("cls"), None)
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    assert all(".ssf.default." in n or n.startswith(("ssf.default.", "head.")) for n in names)
    assert len(names) == 12 * 6 * 2 + 2 * 2 + 2
    assert frozen_unchanged_after_training(model) == []


@pytest.mark.parametrize("variant", VARIANTS)
def test_merge_folds_into_plain_timm(variant):
    model = train_steps(build_method("ssf", variant_vit(variant), None))
    assert merge_to_plain_timm("ssf", model, variant) <= 1e-5
    assert not any(m._forward_hooks for m in model.modules())


def test_merge_refuses_a_layer_without_bias():
    model = build_method("ssf", variant_vit("cls"), None)
    model.blocks[3].attn.qkv.bias = None
    with pytest.raises(ConfigError, match=r"SSF cannot fold into 'blocks.3.attn.qkv' \(Linear\): it has no weight"):
        METHODS.get("ssf").merge(model)


def test_options():
    with pytest.raises(ConfigError, match=r"`adapter.init` must be one of normal, identity; got 'zero'"):
        SSFOptions(init="zero")
    assert METHODS.get("ssf").defaults == {"lr": 5e-3, "weight_decay": 5e-5}


def test_resume_is_exact(tmp_path):
    assert resumed_equals_uninterrupted(tmp_path, "ssf", None) == []


def test_two_tasks_share_one_backbone(tiny_run, tmp_path):
    from adaptertune.multitask import MultiTaskModel

    runs = {"a": tiny_run(tmp_path / "a", "ssf", None), "b": tiny_run(tmp_path / "b", "ssf", {"init": "identity"})}
    with torch.no_grad():
        want = {name: model(X) for name, (_, model) in runs.items()}
    files = [d / "adaptertune_weights.safetensors" for d, _ in runs.values()]
    mt = MultiTaskModel.from_files(files, names=list(runs))
    with torch.no_grad():
        for name in ["a", "b", "a", "b"]:
            mt.set_active(name)
            assert torch.equal(mt(X), want[name]), name
    mt.remove_task("a")
    mt.remove_task("b")
    assert not any(m._forward_hooks for m in mt.backbone.modules()) and not hasattr(mt.backbone, "ssf")
