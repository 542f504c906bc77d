"""Analytic FLOPs (methods/flops.py): by hand on a one-block ViT, and against torch's FLOP counter on small ones
(every registered method's formula on the tiny ViT, with no test code of its own)."""

from __future__ import annotations

import pytest
import torch

from adaptertune.errors import ConfigError
from adaptertune.methods import METHODS, build_method
from adaptertune.methods.adapter import AdapterConfig
from adaptertune.methods.flops import (
    BlockCost,
    Extra,
    StepFlops,
    ViTGeometry,
    count_step,
    flop_methods,
    inference_flops,
    step_flops,
    vit_geometry,
)
from helpers import flop_counter

# depth 1, d=4, MLP 8, 2 patches + cls = 3 tokens, patch 1x2x3 (6 inputs), 2 classes.
# Forward (2mkn each): patch 2*2*6*4=96, qkv 2*3*4*12=288, QK^T+AV 2*2*3*3*4=144, proj 2*3*4*4=96,
# fc1 2*3*4*8=192, fc2 192, head 2*1*4*2=16  -> 1024.
G = ViTGeometry(depth=1, dim=4, mlp_hidden=8, tokens=3, patches=2, patch_dim=6, num_classes=2)


def test_flops_by_hand_inference_and_head():
    assert inference_flops(G) == StepFlops(1024, 0, 0)
    # head-only: the frozen backbone builds no graph; only the head's weight gradient
    assert step_flops(G, "head") == StepFlops(1024, 0, 16)


def test_flops_by_hand_full():
    f = step_flops(G, "full")
    # input gradients everywhere but the patch embedding (the image needs none); attention twice its forward
    assert f.backward_activations == 288 + 2 * 144 + 96 + 192 + 192 + 16
    # weight gradients of every linear (attention products have no weights)
    assert f.backward_weights == 96 + 288 + 96 + 192 + 192 + 16
    assert f.total == 1024 + 1072 + 880


def test_flops_by_hand_adapter_and_lora():
    # adapter r=2 after block 0: down 2*3*4*2=48, up 48. The block itself needs no backward at all:
    # its output feeds the adapter but does not depend on anything trained.
    a = step_flops(G, "adapter", AdapterConfig(rank=2))
    assert a == StepFlops(1024 + 96, 48 + 16, 48 + 48 + 16)
    assert step_flops(G, "parallel", {"rank": 2}) == a  # a bottleneck on the MLP input: the same matmuls
    assert count_step(G, [BlockCost()]) == count_step(G) == step_flops(G, "head")
    # LoRA r=2 on qkv: A 2*3*4*2=48, B 2*3*2*12=144; everything after qkv needs input gradients.
    lo = step_flops(G, "lora", {"rank": 2})
    assert lo.forward == 1024 + 48 + 144
    assert lo.backward_activations == 144 + 2 * 144 + 96 + 192 + 192 + 16
    assert lo.backward_weights == 48 + 144 + 16
    assert step_flops(G, "full").scaled(3).total == 3 * step_flops(G, "full").total


def test_flops_by_hand_tokens_and_where_gradients_start():
    # VPT-shallow, 2 prompts: 5 tokens in the block (qkv 2*5*4*12=480, QK^T+AV 2*2*5*5*4=400, proj 160,
    # fc1 320, fc2 320); the prompts train, so every layer from block 0 on needs input gradients
    vpt = count_step(G, [BlockCost(added_tokens=2)], input_grad=True)
    assert vpt == StepFlops(96 + 480 + 400 + 160 + 320 + 320 + 16, 480 + 800 + 160 + 320 + 320 + 16, 16)
    # BitFit: the patch embedding's bias trains: the same backward as full minus every weight gradient
    full = step_flops(G, "full")
    assert step_flops(G, "bitfit") == StepFlops(1024, full.backward_activations, 16)
    # a trained scale on fc1's output (SSF there alone): only fc2 and the head need input gradients
    assert count_step(G, [BlockCost(extras=(Extra("fc1"),))]) == StepFlops(1024, 192 + 16, 16)
    # fc2's own weight trains (selective): its weight gradient, then the head's input gradient
    assert count_step(G, [BlockCost(trained={"fc2"})]) == StepFlops(1024, 16, 192 + 16)


def test_flops_by_hand_extras():
    # a 3x3 conv on 2 channels beside the MLP over the 2 patches (rows): its matmul equivalent 18 -> 2
    conv = count_step(G, [BlockCost(extras=(Extra("mlp", ((18, 2),), rows=2),))])
    assert conv == StepFlops(1024 + 2 * 2 * 18 * 2, 16, 144 + 16)
    # a frozen extra after the block costs its forward; nothing before the head needs a gradient
    assert count_step(G, [BlockCost(extras=(Extra("out", ((4, 4),), trained=False),))]) == StepFlops(1120, 0, 16)
    # a bottleneck before the attention (RepAdapter): 48 + 48, then qkv onwards need input gradients
    rep = count_step(G, [BlockCost(extras=(Extra("attn_in", ((4, 2), (2, 4))),))])
    assert rep == StepFlops(1024 + 96, 48 + 288 + 288 + 96 + 192 + 192 + 16, 96 + 16)
    # a bottleneck beside the attention (Convpass) reads norm1(x): qkv and the attention need no backward
    cp = count_step(G, [BlockCost(extras=(Extra("attn", ((4, 2), (2, 4))),))])
    assert cp == StepFlops(1024 + 96, 48 + 192 + 192 + 16, 96 + 16)


def test_flops_extras_after_a_sub_layer_count_in_every_block():
    # a bottleneck on the MLP output (Pfeiffer) in both blocks of a two-block ViT: 96 forward in each, also once
    # the block's input already needs a gradient (block 1)
    g2 = ViTGeometry(depth=2, dim=4, mlp_hidden=8, tokens=3, patches=2, patch_dim=6, num_classes=2)
    for site in ("attn_out", "mlp_out"):
        f = count_step(g2, [BlockCost(extras=(Extra(site, ((4, 2), (2, 4))),))] * 2)
        assert f.forward == inference_flops(g2).forward + 2 * 96 and f.backward_weights == 2 * 96 + 16


def test_flops_errors():
    with pytest.raises(ConfigError, match="No FLOP formula for method 'linear-probe-cached'; known: ") as e:
        step_flops(G, "linear-probe-cached")
    known = str(e.value).split("known: ")[1].rstrip(".").split(", ")  # every method with a formula, sorted
    assert known == sorted(flop_methods()) and {"adapter", "full", "head", "lora"} <= set(known)
    assert "linear-probe-cached" not in known
    with pytest.raises(ConfigError, match="mlp"):
        step_flops(G, "lora", {"targets": "mlp"})
    with pytest.raises(ConfigError, match="Unknown FLOP site 'after'; known: in, attn_in"):
        Extra("after")
    with pytest.raises(ConfigError, match="Unknown block linear 'mlp'; known: qkv, proj, fc1, fc2"):
        BlockCost(trained={"mlp"})
    with pytest.raises(ConfigError, match=r"one BlockCost per block \(1\), got 2"):
        count_step(G, [BlockCost()] * 2)


def _counted(model, x, y) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as fc:
        torch.nn.functional.cross_entropy(model(x), y).backward()
    return fc.get_total_flops()


@pytest.mark.parametrize("method,placement", [("adapter", "last:1"), ("parallel", "last:2")])
def test_flops_match_torch_flop_counter(method, placement):
    """The analytic count of a placement equals what torch's FlopCounterMode sees in a real forward + backward
    (every method's default options: test_every_methods_formula_matches_torch_flop_counter)."""
    import timm

    torch.manual_seed(0)
    model = timm.create_model(
        "vit_tiny_patch16_224", img_size=32, patch_size=8, embed_dim=32, depth=3, num_heads=2, num_classes=5
    )
    for b in model.blocks:  # math attention: the counter does not see the fused CPU SDPA kernel
        b.attn.fused_attn = False
    geom = vit_geometry(model)
    assert (geom.tokens, geom.patch_dim, geom.mlp_hidden) == (17, 192, 128)
    options = AdapterConfig(rank=4, placement=placement) if placement else None
    build_method(method, model, options)
    x, y = torch.randn(2, 3, 32, 32), torch.tensor([0, 1])
    assert _counted(model, x, y) == 2 * step_flops(geom, method, options).total


@pytest.mark.parametrize("options", [{"rank": 4}, {"rank": 4, "targets": "qkv+mlp", "placement": "last:1"}])
def test_flops_lora_match_torch_flop_counter(options):
    """The registered lora method (PEFT layers) against the counter, placement and MLP targets included."""
    import timm

    pytest.importorskip("peft")
    torch.manual_seed(0)
    model = timm.create_model(
        "vit_tiny_patch16_224", img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2, num_classes=5
    )
    for b in model.blocks:
        b.attn.fused_attn = False
    geom = vit_geometry(model)
    build_method("lora", model, options)
    x, y = torch.randn(2, 3, 32, 32), torch.tensor([0, 1])
    assert _counted(model, x, y) == 2 * step_flops(geom, "lora", options).total


MATMULS = {"mm", "addmm", "bmm", "baddbmm", "convolution", "convolution_backward"}


@pytest.mark.parametrize("method", METHODS.names())
def test_every_methods_formula_matches_torch_flop_counter(method, tiny_vit):
    """Each registered method (default options) on the tiny ViT: its formula times the batch equals the matmul and
    convolution FLOPs torch's FlopCounterMode counts in one forward + backward. Tolerance: none (exact), since both
    count 2 FLOPs per multiply-add of the same products and the counter counts no elementwise op (the fused
    attention kernel is turned off: the counter would see it as one op); a batch of 2 makes a cost per step
    rather than per image show up as a mismatch unless the formula states it as ``per_step`` (DoRA's weight
    norms, FacT-TK's cores), which ``scaled`` counts once. A method with no formula must train on cached features.
    (The counter's grouped-convolution weight gradient is corrected: helpers.flop_counter.)"""
    info = METHODS.get(method)
    model = tiny_vit(num_classes=5)
    geom, options = vit_geometry(model), info.resolve(None)
    formula = info.step_flops(geom, options)
    if formula is None:
        assert info.cached_features, f"'{method}' trains through the backbone but has no FLOP formula"
        return
    torch.manual_seed(0)
    model = info.build(model, options).train()
    for b in model.blocks:
        b.attn.fused_attn = False
    x, y = torch.randn(2, 3, 32, 32), torch.tensor([0, 1])
    with flop_counter() as fc:
        torch.nn.functional.cross_entropy(model(x), y).backward()
    counted = {str(op).split(".")[-1]: n for op, n in fc.get_flop_counts()["Global"].items()}
    assert set(counted) <= MATMULS, f"ops the formula does not model: {set(counted) - MATMULS}"
    assert sum(counted.values()) == formula.scaled(2).total
