"""VPT-shallow and VPT-deep (methods/vpt.py): prompts in the token sequence, run by hooks on the blocks."""

import copy

import pytest
import timm
import torch

from adaptertune.engine import load_tensors
from adaptertune.errors import CheckpointError, ConfigError
from adaptertune.methods import METHODS, build_method
from adaptertune.methods.vpt import PromptSlot, VPTOptions, prompt_bound
from adaptertune.vit import backbone_blocks, embed_tokens, logits_from_tokens, patch_tokens
from helpers import trainable_names
from petl_checks import VARIANTS, X, resume_runs, tasks_share_a_backbone, train_steps, variant_vit

METHOD_NAMES = ("vpt-shallow", "vpt-deep")


@pytest.fixture(scope="module")
def vit_b():
    torch.manual_seed(0)
    return timm.create_model("vit_base_patch16_224", pretrained=False, num_classes=100)


@pytest.mark.parametrize(
    "method,n,prompt_params", [("vpt-shallow", 10, 7_680), ("vpt-deep", 10, 92_160), ("vpt-deep", 50, 460_800)]
)
def test_trainable_parameters_on_vit_b16_match_methods_md(vit_b, method, n, prompt_params):
    model = build_method(method, copy.deepcopy(vit_b), {"prompts": n})
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == prompt_params + 76_900


def test_defaults_and_init_range(vit_b):
    assert VPTOptions() == VPTOptions(prompts=10, dropout=0.1)
    assert prompt_bound(patch_tokens(vit_b).patch_dim, 768) == 0.0625  # sqrt(6 / (3 * 16 * 16 + 768))
    model = build_method("vpt-deep", variant_vit(), {"prompts": 50})
    v = prompt_bound(3 * 4 * 4, 192)
    t = torch.stack([b.prompts["default"].tokens for b in model.blocks])  # (12, 50, 192)
    assert t.abs().max() <= v and t.abs().max() > 0.99 * v
    assert abs(t.std().item() - v / 3**0.5) < 0.01 * v  # U(-v, v) has std v / sqrt(3)


@pytest.mark.parametrize(
    "option,match", [({"prompts": 0}, r"adapter.prompts.*>= 1, got 0"), ({"dropout": 1.0}, "dropout")]
)
def test_bad_options_are_refused(option, match):
    with pytest.raises(ConfigError, match=match):
        METHODS.get("vpt-shallow").resolve(option)


def manual_logits(model: torch.nn.Module, x: torch.Tensor, deep: bool) -> torch.Tensor:
    """VPT written out: prompts after the prefix, (deep) replaced before every block, dropped before the norm."""
    prefix, blocks = model.num_prefix_tokens, backbone_blocks(model)
    t = embed_tokens(model, x)
    for i, blk in enumerate(blocks):
        if i == 0 or deep:
            p = blk.prompts["default"].tokens.expand(x.shape[0], -1, -1)
            n = p.shape[1]
            t = torch.cat([t[:, :prefix], p, t[:, prefix + (n if i > 0 else 0) :]], dim=1)
        t = type(blk).forward(blk, t)  # the block's own forward, without its hooks
    t = torch.cat([t[:, :prefix], t[:, prefix + n :]], dim=1)
    return logits_from_tokens(model, t)


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("method", METHOD_NAMES)
def test_forward_is_vpt_and_the_head_reads_the_plain_tokens(method, variant):
    plain = variant_vit(variant)
    keys, ref = set(plain.state_dict()), plain(X)
    model = build_method(method, variant_vit(variant), {"prompts": 3})
    with torch.no_grad():
        out, feats = model(X), model.forward_features(X)
        assert torch.equal(out, manual_logits(model, X, deep=method == "vpt-deep"))
    assert out.shape == (2, 10) and feats.shape == plain.forward_features(X).shape  # prompts gone before the norm
    assert not torch.allclose(out, ref)  # every token attends to the prompts: not the backbone's logits
    assert {k for k in model.state_dict() if ".prompts." not in k} == keys
    PromptSlot.activate(model, None)
    assert torch.equal(model(X), ref)
    PromptSlot.remove(model)
    assert set(model.state_dict()) == keys and torch.equal(model(X), ref)


@pytest.mark.parametrize("method", METHOD_NAMES)
def test_bf16_autocast_keeps_the_stream_dtype(method):
    model = build_method(method, variant_vit("reg"), {"prompts": 3})
    with torch.no_grad():
        want = model(X)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            got = model(X)
    assert got.shape == want.shape and (got.float() - want).abs().max() < 0.1


def test_prompt_dropout_only_in_training():
    # no other dropout in the tiny ViT
    model = build_method("vpt-shallow", variant_vit(), {"prompts": 4, "dropout": 0.5})
    with torch.no_grad():
        a, b = model(X), model(X)
        model.train()
        c, d = model(X), model(X)
    assert torch.equal(a, b) and not torch.equal(c, d) and not torch.equal(a, c)
    model = build_method("vpt-shallow", variant_vit(), {"prompts": 4, "dropout": 0.0})
    with torch.no_grad():
        assert torch.equal(model(X), model.train()(X))


@pytest.mark.parametrize("method", METHOD_NAMES)
def test_only_prompts_and_head_train_and_the_backbone_stays(method):
    model = build_method(method, variant_vit("reg"), {"prompts": 3}).train()
    blocks = range(12) if method == "vpt-deep" else [0]
    assert sorted(trainable_names(model)) == sorted(
        ["head.weight", "head.bias", *(f"blocks.{i}.prompts.default.tokens" for i in blocks)]
    )
    frozen = {k: v.clone() for k, v in model.state_dict().items() if ".prompts." not in k and not k.startswith("head")}
    before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    train_steps(model, steps=2)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in frozen.items())
    assert all(not torch.equal(p, before[n]) for n, p in model.named_parameters() if p.requires_grad)


def test_tasks_with_their_own_prompts_share_a_backbone(tiny_run, tmp_path):
    specs = {
        "shallow": ("vpt-shallow", {"prompts": 3}),
        "deep": ("vpt-deep", {"prompts": 5}),
        "ad": ("adapter", {"rank": 4}),
    }
    mt, files, want = tasks_share_a_backbone(
        tiny_run, tmp_path, specs, ["shallow", "deep", "ad", "deep", "shallow", "ad"]
    )
    mt.remove_task("deep")
    mt.set_active("shallow")
    with torch.no_grad():
        assert torch.equal(mt(X), want["shallow"])
    tensors, _ = load_tensors(files[0])
    rest = {k: v for k, v in tensors.items() if not k.startswith("head.")}
    with pytest.raises(CheckpointError, match="do not match the rebuilt set"):  # a shallow file read as deep
        METHODS.get("vpt-deep").attach(mt.backbone, "wrong", VPTOptions(prompts=3), rest, "f")
    assert PromptSlot.set_names(mt.backbone) == ["shallow"]


@pytest.mark.slow  # three tiny training runs: 20 s on the shared 2-core machine (convpass 44 s, houlsby 26 s)
def test_resume_after_one_epoch_is_bitwise(tmp_path):
    """2 epochs in one go == 1 epoch, stopped, resumed for the second (prompt dropout draws from the RNG)."""
    train = {"batch_size": 7, "log_every_steps": 1}  # 14 train images + 2 val, batch 7: 2 steps per epoch
    # stopped at the first step of epoch 2
    a, b, start = resume_runs(tmp_path, "vpt-deep", {"prompts": 2}, n_classes=2, size=32, stop_at=3, train=train)
    assert start == 2  # from the end-of-epoch-1 checkpoint
    assert a.keys() == b.keys() and len(a) == 14
    assert all(torch.equal(a[k], b[k]) for k in a)
