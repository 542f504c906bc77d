"""LoRA through PEFT (methods/lora.py): what trains, where it starts, its own options, its target regex."""

import sys

import pytest
import torch

from adaptertune.errors import ConfigError, MissingExtraError
from adaptertune.methods import build_method
from adaptertune.methods.adapter import AdapterConfig
from adaptertune.methods.lora import LoraOptions
from helpers import trainable_names

X = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))


def test_lora_trains_only_lora_and_head_and_starts_at_pretrained_logits(tiny_vit):
    ref = tiny_vit()(X)
    model = build_method("lora", tiny_vit(), AdapterConfig(rank=4, alpha=2.0))
    names = trainable_names(model)
    assert {"head.weight", "head.bias"} <= set(names)
    lora = [n for n in names if not n.startswith("head.")]
    assert len(lora) == 2 * 12 and all(".attn.qkv.lora_" in n for n in lora)
    assert torch.equal(model(X), ref)
    layer = model.blocks[0].attn.qkv
    assert layer.scaling["default"] == 2.0  # adapter.alpha is the output scale: lora_alpha / r
    assert torch.count_nonzero(layer.lora_B["default"].weight) == 0


@pytest.mark.parametrize(
    ("option", "match"),
    [
        ({"rank": 0}, r"`adapter.rank` must be an integer >= 1, got 0"),
        ({"alpha": -1}, r"`adapter.alpha` must be >= 0, got -1"),
        ({"dropout": 1.0}, r"`adapter.dropout` must be in \[0, 1\), got 1"),
        ({"placement": "most"}, r"Unknown placement 'most'"),
        ({"targets": "mlp"}, r"`adapter.targets` must be one of qkv, qkv\+mlp; got 'mlp'"),
    ],
)
def test_lora_options_check_their_own_fields(option, match):
    """LoRA's options validate themselves, with the messages the adapter options give for the shared names."""
    with pytest.raises(ConfigError, match=match):
        LoraOptions(**option)
    assert LoraOptions(rank="4", alpha="0.5", placement=(0, 3)) == LoraOptions(rank=4, alpha=0.5, placement=[0, 3])


def test_lora_mlp_targets_and_placement(tiny_vit):
    model = build_method("lora", tiny_vit(), LoraOptions(rank=2, targets="qkv+mlp", placement="last:2"))
    lora = {n.split(".lora_")[0] for n in trainable_names(model) if ".lora_" in n}
    assert lora == {f"blocks.{i}.{m}" for i in (10, 11) for m in ("attn.qkv", "mlp.fc1", "mlp.fc2")}


def test_lora_without_peft_gives_install_hint(tiny_vit, monkeypatch):
    monkeypatch.setitem(sys.modules, "peft", None)
    with pytest.raises(MissingExtraError, match=r"pip install 'adaptertune\[peft\]'"):
        build_method("lora", tiny_vit(), AdapterConfig(rank=2))


class _Wrapped(torch.nn.Module):
    """A ViT whose blocks are named ``encoder.layers`` first (``.blocks`` is an alias): a dotted LoRA prefix."""

    def __init__(self, vit: torch.nn.Module) -> None:
        super().__init__()
        self.encoder = torch.nn.Module()
        self.encoder.layers = vit.blocks
        self.blocks = vit.blocks
        self.encoder_layers = torch.nn.ModuleList([torch.nn.Module()])  # "encoder" + any char + "layers"
        self.encoder_layers[0].attn = torch.nn.Module()
        self.encoder_layers[0].attn.qkv = torch.nn.Linear(192, 576)


def test_lora_target_regex_escapes_the_blocks_prefix(tiny_vit):
    import re

    pytest.importorskip("peft")
    from adaptertune.methods.lora import lora_config

    pattern = lora_config(_Wrapped(tiny_vit()), LoraOptions(rank=2, placement=[0])).target_modules
    assert re.fullmatch(pattern, "encoder.layers.0.attn.qkv")
    assert not re.fullmatch(pattern, "encoder_layers.0.attn.qkv")  # '.' is literal, not "any character"
    assert not re.fullmatch(pattern, "encoder.layers.0.attnXqkv")
