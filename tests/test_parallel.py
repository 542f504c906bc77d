"""The parallel adapter (methods/parallel.py, AdaptFormer): an adapter beside each placed block's MLP."""

import torch

from adaptertune.methods import build_method
from adaptertune.methods.adapter import AdapterConfig, adapter_param_count

X = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))


def test_parallel_starts_bitwise_and_keeps_backbone_keys(tiny_vit):
    plain = tiny_vit()
    keys, ref = set(plain.state_dict()), plain(X)
    model = build_method("parallel", tiny_vit(), AdapterConfig(rank=8))
    assert torch.equal(model(X), ref)
    assert {k for k in model.state_dict() if ".adapters." not in k} == keys
    n_head = sum(p.numel() for p in model.head.parameters())
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == adapter_param_count(12, 192, 8) + n_head
    with torch.no_grad():
        model.blocks[3].adapters["default"].up.weight.normal_()
    assert not torch.allclose(model(X), ref)


def test_parallel_adapter_sees_the_mlp_input(tiny_vit):
    model = build_method("parallel", tiny_vit(), AdapterConfig(rank=4, placement=[0]))
    blk, ad = model.blocks[0], model.blocks[0].adapters["default"]
    with torch.no_grad():
        ad.up.weight.normal_()
        x = torch.randn(2, 5, 192)
        u = blk.norm2(x + blk.ls1(blk.attn(blk.norm1(x))))
        h = x + blk.ls1(blk.attn(blk.norm1(x)))
        want = h + blk.ls2(blk.mlp.fc2(blk.mlp.norm(blk.mlp.drop1(blk.mlp.act(blk.mlp.fc1(u))))) + ad(u))
        torch.testing.assert_close(blk(x), want)
