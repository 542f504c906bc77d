"""vit.py: what a timm ViT is made of, read in one place (the engine, FLOP counter, advisers and multi-task ask it)."""

import pytest
import timm
import torch
from torch import nn

from adaptertune.errors import ConfigError
from adaptertune.vit import (
    PatchTokens,
    backbone_blocks,
    classifier,
    embed_tokens,
    embedding_parts,
    feature_width,
    input_shape,
    logits_from_tokens,
    mlp_hidden_width,
    patch_tokens,
    pre_logits,
    runs_in_stages,
)


def _vit(**kw) -> nn.Module:
    torch.manual_seed(0)
    args = dict(img_size=32, patch_size=4, embed_dim=48, depth=2, num_heads=2, num_classes=5)
    return timm.create_model("vit_tiny_patch16_224", **{**args, **kw}).eval()


def test_structure_of_a_timm_vit():
    model = _vit(reg_tokens=2)
    assert input_shape(model) == torch.Size((3, 32, 32))
    assert patch_tokens(model) == PatchTokens(patches=64, patch_dim=3 * 4 * 4, prefix=3)  # cls + 2 registers
    assert mlp_hidden_width(model) == 4 * 48 and feature_width(model) == 48
    assert classifier(model) is model.head
    modules, tensors = embedding_parts(model)
    assert model.patch_embed in modules and {id(t) for t in tensors} == {
        id(model.cls_token),
        id(model.reg_token),
        id(model.pos_embed),
    }


def test_the_stages_run_the_forward():
    model, x = _vit(), torch.randn(2, 3, 32, 32)
    assert runs_in_stages(model)
    tokens = embed_tokens(model, x)
    for blk in backbone_blocks(model):
        tokens = blk(tokens)
    with torch.no_grad():
        torch.testing.assert_close(logits_from_tokens(model, tokens), model(x))
        assert torch.equal(model.head(pre_logits(model, x)), model(x))


def test_a_model_that_is_not_a_vit_says_nothing():
    plain = nn.Sequential(nn.Linear(4, 2))
    assert input_shape(plain) is None and patch_tokens(plain) is None and mlp_hidden_width(plain) is None
    assert classifier(plain) is None and not runs_in_stages(plain)
    assert embedding_parts(plain) == ([], [])
    with pytest.raises(ConfigError, match="feature width of Sequential"):
        feature_width(plain)
