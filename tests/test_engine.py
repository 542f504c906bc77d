import math

import pytest
import torch

from adaptertune import AdapterConfig, add_adapters
from adaptertune.engine import param_groups, topk_correct, warmup_cosine
from conftest import tiny_vit


def test_warmup_cosine_shape():
    lrs = [warmup_cosine(s, total_steps=100, warmup_steps=10, base_lr=1.0, min_lr=0.1) for s in range(100)]
    assert lrs[0] == pytest.approx(1 / 11)
    assert lrs[9] == pytest.approx(10 / 11)
    assert lrs[10] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:]))  # monotone decay after warm-up
    assert warmup_cosine(100, 100, 10, 1.0, 0.1) == pytest.approx(0.1)
    assert warmup_cosine(55, 100, 10, 1.0, 0.0) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.5)))
    assert warmup_cosine(0, 10, 0, 2.0) == 2.0  # no warm-up


def test_param_groups_decay_weights_only():
    model = tiny_vit()
    groups = param_groups(model, 0.05)
    names = {id(p): n for n, p in model.named_parameters()}
    decayed = {names[id(p)] for p in groups[0]["params"]}
    plain = {names[id(p)] for p in groups[1]["params"]}
    assert "blocks.0.attn.qkv.weight" in decayed and "head.weight" in decayed
    assert {"cls_token", "pos_embed", "blocks.0.norm1.weight", "blocks.0.attn.qkv.bias", "head.bias"} <= plain
    assert groups[1]["weight_decay"] == 0.0
    everything = param_groups(model, 0.05, decay_all=True)
    assert len(everything[0]["params"]) == len(list(model.parameters())) and not everything[1]["params"]


def test_param_groups_skip_frozen():
    model = add_adapters(tiny_vit(), AdapterConfig(rank=2, placement="last:1"))
    n = sum(len(g["params"]) for g in param_groups(model, 0.05))
    assert n == 4 + 2  # adapter down/up weight+bias, head weight+bias


def test_topk_correct():
    logits = torch.tensor([[0.1, 0.5, 0.4], [0.9, 0.05, 0.05], [0.2, 0.3, 0.5]])
    targets = torch.tensor([2, 0, 0])
    assert topk_correct(logits, targets, (1, 2, 5)) == [1, 2, 3]
