"""Analytic FLOPs (methods/flops.py): by hand on a one-block ViT, and against torch's FLOP counter on small ones."""

from __future__ import annotations

import pytest
import torch

from adaptertune.errors import ConfigError
from adaptertune.methods import build_method
from adaptertune.methods.adapter import AdapterConfig
from adaptertune.methods.flops import StepFlops, ViTGeometry, count_step, inference_flops, step_flops, vit_geometry

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
    assert count_step(G, adapted=[], rank=2) == step_flops(G, "head")
    # LoRA r=2 on qkv: A 2*3*4*2=48, B 2*3*2*12=144; everything after qkv needs input gradients.
    lo = step_flops(G, "lora", {"rank": 2})
    assert lo.forward == 1024 + 48 + 144
    assert lo.backward_activations == 144 + 2 * 144 + 96 + 192 + 192 + 16
    assert lo.backward_weights == 48 + 144 + 16
    assert step_flops(G, "full").scaled(3).total == 3 * step_flops(G, "full").total


def test_flops_errors():
    with pytest.raises(ConfigError, match="No FLOP formula for method 'bitfit'; known: adapter, full, head, lora"):
        step_flops(G, "bitfit")
    with pytest.raises(ConfigError, match="mlp"):
        step_flops(G, "lora", {"targets": "mlp"})
    with pytest.raises(ConfigError, match="mlp"):
        count_step(G, lora_linears=("mlp",))


def _counted(model, x, y) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as fc:
        torch.nn.functional.cross_entropy(model(x), y).backward()
    return fc.get_total_flops()


@pytest.mark.parametrize(
    "method,placement",
    [("head", None), ("full", None), ("adapter", "all"), ("adapter", "last:1"), ("parallel", "last:2")],
)
def test_flops_match_torch_flop_counter(method, placement):
    """The analytic count equals what torch's FlopCounterMode sees in a real forward + backward."""
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
