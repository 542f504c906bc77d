"""Selective tuning (methods/selective.py): chosen blocks, or their attn / mlp / qkv, train with the head."""

import pytest
import torch

from adaptertune.engine.prefix import PrefixTail, cacheable_prefix, prefix_tokens
from adaptertune.errors import ConfigError
from adaptertune.methods import METHODS, build_method
from adaptertune.methods.flops import step_flops, vit_geometry
from adaptertune.methods.selective import SelectiveOptions
from petl_checks import (
    HEAD_100,
    VARIANTS,
    X,
    counted_step_flops,
    frozen_unchanged_after_training,
    merge_to_plain_timm,
    n_trainable,
    resumed_equals_uninterrupted,
    variant_vit,
    vit_b,
)

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: more threads only fight over a busy machine


@pytest.fixture(scope="module")
def base():
    return vit_b()


def test_sizes_on_vit_b(base):
    """METHODS.md's count (3 blocks' qkv) and the default (the last 3 blocks whole)."""
    qkv = build_method("selective", base, SelectiveOptions(parts="qkv"))
    assert n_trainable(qkv) == 5_315_328 + HEAD_100 == 3 * (768 * 2304 + 2304) + HEAD_100
    block = sum(p.numel() for p in base.blocks[0].parameters())
    assert n_trainable(build_method("selective", base, None)) == 3 * block + HEAD_100 == 21_263_616 + HEAD_100


@pytest.mark.parametrize(
    ("options", "trained"),
    [
        (SelectiveOptions(), {f"blocks.{i}." for i in (9, 10, 11)}),
        (SelectiveOptions(blocks=[0, 5], parts="attn"), {"blocks.0.attn.", "blocks.5.attn."}),
        (SelectiveOptions(blocks="first:1", parts="mlp"), {"blocks.0.mlp."}),
        (SelectiveOptions(blocks="last:2", parts="qkv"), {"blocks.10.attn.qkv.", "blocks.11.attn.qkv."}),
    ],
)
def test_what_trains(options, trained):
    model = build_method("selective", variant_vit("cls"), options)
    names = {n for n, p in model.named_parameters() if p.requires_grad} - {"head.weight", "head.bias"}
    want = {n for n, _ in model.named_parameters() if n.startswith(tuple(trained))}
    assert names == want and want
    assert frozen_unchanged_after_training(model) == []


@pytest.mark.parametrize("variant", VARIANTS)
def test_starts_at_the_backbone_and_is_plain(variant):
    ref = variant_vit(variant)(X)
    model = build_method("selective", variant_vit(variant), SelectiveOptions(blocks="last:2"))
    assert torch.equal(model(X), ref)
    frozen_unchanged_after_training(model)
    assert merge_to_plain_timm("selective", model, variant, folds=False) == 0.0


def test_options():
    with pytest.raises(ConfigError, match=r"`adapter.parts` must be one of all, attn, mlp, qkv; got 'head'"):
        SelectiveOptions(parts="head")
    with pytest.raises(ConfigError, match=r"Unknown placement 'most'"):
        SelectiveOptions(blocks="most")
    with pytest.raises(ConfigError, match=r"out of range: the backbone has blocks 0..11"):
        build_method("selective", variant_vit("cls"), SelectiveOptions(blocks=[12]))


def test_resume_is_exact(tmp_path):
    assert resumed_equals_uninterrupted(tmp_path, "selective", {"blocks": "last:1", "parts": "mlp"}) == []


@pytest.mark.parametrize(
    "options", [{"blocks": "first:1"}, {"blocks": [3, 7], "parts": "attn"}, {"parts": "mlp"}, {"parts": "qkv"}]
)
def test_flops_match_torch_flop_counter(options):
    """Each part and a first / middle placement (the defaults: tests/test_flops.py): a whole block's norms make its
    qkv compute an input gradient, a part alone does not."""
    model = variant_vit("cls", num_classes=5)
    geom = vit_geometry(model)
    assert (
        counted_step_flops(build_method("selective", model, options))
        == step_flops(geom, "selective", options).scaled(2).total
    )


@pytest.mark.parametrize("variant", VARIANTS)
def test_the_frozen_prefix_is_cached_exactly(variant):
    """blocks last:3 leaves the first 9 blocks untouched: train.cache_prefix runs them once, and the cached
    prefix's tokens through the rest of the model give the model's own logits."""
    info = METHODS.get("selective")
    options = info.resolve(None)
    model = build_method("selective", variant_vit(variant), options).eval()
    k = cacheable_prefix(model, info.frozen_prefix(model, options))
    assert k == 9
    with torch.no_grad():
        assert torch.equal(PrefixTail(model, k)(prefix_tokens(model, X, k)), model(X))
