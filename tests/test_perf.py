"""perf: analytic FLOPs (by hand and against torch's FLOP counter), the speed tool and the memory probe."""

from __future__ import annotations

import json

import pytest
import torch

from adaptertune.cli import main
from adaptertune.errors import ConfigError
from adaptertune.methods import build_method
from adaptertune.methods.adapter import AdapterConfig
from adaptertune.methods.flops import StepFlops, ViTGeometry, count_step, inference_flops, step_flops, vit_geometry
from helpers import TINY_VIT_ARGS

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


REQUIRED = {
    "method",
    "step_ms",
    "step_ms_spread",
    "images_per_s",
    "peak_memory_mb",
    "trainable_params",
    "ratio_to_full",
    "flops_share",
    "inference_ratio",
}


def test_speed_cli_writes_json(tmp_path, capsys):
    out = tmp_path / "speed.json"
    args = ["speed", *TINY_VIT_ARGS, "--batch-size", "2", "--methods", "head,full,adapter,lora"]
    args += ["--steps", "1", "--warmup", "0", "--no-memory", "--matmul-size", "64", "--json", str(out)]
    assert main(args) == 0
    table = capsys.readouterr().out
    assert "adapter" in table and "x full" in table
    report = json.loads(out.read_text())
    assert set(report["machine"]) >= {"device", "threads", "matmul_gflops"}
    assert report["machine"]["matmul_gflops"] > 0
    rows = {m["method"]: m for m in report["methods"]}
    assert list(rows) == ["head", "full", "adapter", "lora"]
    for m in rows.values():
        assert REQUIRED <= set(m)
        assert m["step_ms"] > 0 and 0 < m["flops_share"]
        assert m["inference_ratio"] > 0
    assert rows["full"]["ratio_to_full"] == 1.0
    assert rows["adapter"]["trainable_params"] == 12 * (2 * 192 * 16 + 16 + 192) + 192 * 10 + 10
    assert rows["head"]["trainable_params"] == 192 * 10 + 10
    # lora is the registered method with train's options: rank 16 on qkv of 12 blocks (192 -> 576), + head
    assert rows["lora"]["trainable_params"] == 12 * 16 * (192 + 576) + 192 * 10 + 10
    assert rows["lora"]["gflops_per_step"] > rows["head"]["gflops_per_step"]


def test_speed_times_the_registered_lora_with_its_options(tiny_vit):
    from adaptertune.perf.step import build_for_speed

    a = build_for_speed("lora", tiny_vit(), 4, "last:2", "qkv+mlp")
    b = build_method("lora", tiny_vit(), {"rank": 4, "placement": "last:2", "targets": "qkv+mlp"})
    assert [n for n, p in a.named_parameters() if p.requires_grad] == [
        n for n, p in b.named_parameters() if p.requires_grad
    ]
    with pytest.raises(ConfigError, match="adapter.targets.*qkv, qkv\\+mlp; got 'fc1'"):
        main_speed_config(lora_targets="fc1")


def main_speed_config(**kwargs):
    from adaptertune.perf import SpeedConfig

    return SpeedConfig(**kwargs)


def test_speed_rejects_unknown_method():
    assert main(["speed", "--methods", "head,nope", "--steps", "1"]) == 2


def test_memory_probe_child_process():
    from adaptertune.perf.memory import measure_peak_memory

    spec = {
        "backbone": "vit_tiny_patch16_224",
        "backbone_args": {"img_size": 32, "patch_size": 8, "depth": 2},
        "method": "full",
        "rank": 4,
        "placement": "all",
        "lora_targets": ["qkv"],
        "batch_size": 2,
        "num_classes": 4,
        "device": "cpu",
        "precision": "fp32",
        "threads": 1,
        "steps": 1,
    }
    peak = measure_peak_memory(spec)
    # at least the weights, their gradients and two AdamW moments (4 x ~0.94 M params x 4 bytes)
    assert peak > 4 * 0.9e6 * 4 / 2**20


def test_frozen_parts_get_no_grad_and_build_no_graph():
    """Frozen weights get no .grad, and blocks before the first adapter record no autograd graph at all."""
    import timm

    torch.manual_seed(0)
    model = timm.create_model("vit_tiny_patch16_224", img_size=32, patch_size=8, depth=4, num_classes=3)
    build_method("adapter", model, AdapterConfig(rank=4, placement="last:2"))
    seen = {}
    for i, b in enumerate(model.blocks):
        b.register_forward_pre_hook(lambda m, a, i=i: seen.__setitem__(i, a[0].requires_grad))
    torch.nn.functional.cross_entropy(model(torch.randn(2, 3, 32, 32)), torch.tensor([0, 1])).backward()
    # inputs of blocks 0..2 (block 2 is the first adapted one: its own compute needs no graph either)
    assert seen == {0: False, 1: False, 2: False, 3: True}
    for n, p in model.named_parameters():
        assert (p.grad is not None) == p.requires_grad, n
        assert p.requires_grad == (".adapters." in n or n.startswith("head.")), n


def test_adapter_fast_path_matches_reference_formula():
    from adaptertune.methods.adapter import Adapter

    torch.manual_seed(0)
    h = torch.randn(2, 5, 8)
    for alpha in (1.0, 0.5):
        a = Adapter(8, 3, alpha=alpha, init="random")
        expected = h + alpha * a.up(torch.nn.functional.gelu(a.down(h)))
        assert torch.allclose(a.residual(h), expected, atol=1e-6)
        assert torch.allclose(a(h), expected - h, atol=1e-6)


def test_train_compile_flag_is_validated():
    from adaptertune.config import TrainConfig

    assert TrainConfig().compile is False
    assert TrainConfig(compile="true").compile is True
    with pytest.raises(ConfigError, match="train.compile"):
        TrainConfig(compile="maybe")


@pytest.mark.parametrize("alpha", [1.0, 0.5])
@pytest.mark.parametrize("input_grad", [True, False])
def test_fused_residual_adapter_matches_module_path(alpha, input_grad):
    from adaptertune.methods.adapter import Adapter

    torch.manual_seed(0)
    a = Adapter(8, 3, alpha=alpha, init="random")
    h = torch.randn(2, 5, 8, requires_grad=input_grad)
    g = torch.randn(2, 5, 8)
    fused = a.residual(h)
    assert fused.grad_fn is not None and "ResidualAdapter" in type(fused.grad_fn).__name__
    fused.backward(g)
    grads = [p.grad.clone() for p in a.parameters()] + ([h.grad.clone()] if input_grad else [])
    a.zero_grad()
    h.grad = None
    ref = h + alpha * a.up(torch.nn.functional.gelu(a.down(h)))
    ref.backward(g)
    ref_grads = [p.grad for p in a.parameters()] + ([h.grad] if input_grad else [])
    assert torch.allclose(fused, ref, atol=1e-6)
    for x, y in zip(grads, ref_grads):
        assert torch.allclose(x, y, atol=1e-5)


def test_fused_residual_adapter_gradcheck():
    from adaptertune.methods.adapter.layer import _ResidualAdapter

    torch.manual_seed(0)
    args = [torch.randn(*s, dtype=torch.float64, requires_grad=True) for s in ((2, 3, 4), (2, 4), (2,), (4, 2), (4,))]
    assert torch.autograd.gradcheck(lambda *t: _ResidualAdapter.apply(*t, 0.7), args)


def test_matmul_reference_is_sized_for_the_device():
    from adaptertune.perf.speed import matmul_gflops, matmul_reference

    assert matmul_reference("cuda") == (8192, 20) and matmul_reference("cpu") == (1024, 1)
    calls = []
    real = torch.mm
    try:
        torch.mm = lambda *a, **k: calls.append(1) or real(*a, **k)
        matmul_gflops(8, "fp32", torch.device("cpu"), repeats=3)()
    finally:
        torch.mm = real
    assert len(calls) == 3
