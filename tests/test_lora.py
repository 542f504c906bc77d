"""The baselines: lora (PEFT), parallel (AdaptFormer), bitfit, linear-probe-cached; per-method options."""

import sys

import pytest
import torch

from adaptertune.engine import load_tensors
from adaptertune.engine.features import extract_features
from adaptertune.errors import ConfigError, MissingExtraError
from adaptertune.methods import METHODS, build_method, resolve_adapter_config
from adaptertune.methods.adapter import AdapterConfig, adapter_param_count
from adaptertune.methods.lora import LoraOptions
from adaptertune.runs import run

X = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))


def trainable(model):
    return [n for n, p in model.named_parameters() if p.requires_grad]


def test_all_methods_registered():
    assert {"head", "full", "adapter", "lora", "parallel", "bitfit", "linear-probe-cached"} <= set(METHODS.names())


def test_lora_trains_only_lora_and_head_and_starts_at_pretrained_logits(tiny_vit):
    ref = tiny_vit()(X)
    model = build_method("lora", tiny_vit(), AdapterConfig(rank=4, alpha=2.0))
    names = trainable(model)
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
    lora = {n.split(".lora_")[0] for n in trainable(model) if ".lora_" in n}
    assert lora == {f"blocks.{i}.{m}" for i in (10, 11) for m in ("attn.qkv", "mlp.fc1", "mlp.fc2")}


def test_lora_without_peft_gives_install_hint(tiny_vit, monkeypatch):
    monkeypatch.setitem(sys.modules, "peft", None)
    with pytest.raises(MissingExtraError, match=r"pip install 'adaptertune\[peft\]'"):
        build_method("lora", tiny_vit(), AdapterConfig(rank=2))


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


def test_bitfit_trains_biases_and_head(tiny_vit):
    model = build_method("bitfit", tiny_vit(), None)
    names = trainable(model)
    assert names and all(n.endswith(".bias") or n.startswith("head.") for n in names)
    assert "head.weight" in names and "blocks.0.attn.qkv.bias" in names and "blocks.0.norm1.bias" in names


@pytest.mark.parametrize(
    ("method", "option"),
    [("lora", {"init": "small"}), ("lora", {"act": "relu"}), ("parallel", {"targets": "qkv+mlp"})],
)
def test_option_that_does_not_apply_is_an_error(method, option):
    match = f"adapter.{next(iter(option))}.*does not apply to method '{method}'; it accepts "
    with pytest.raises(ConfigError, match=match):
        resolve_adapter_config(method, option)  # as written in YAML
    if method == "lora":  # the adapter methods' options object, given to LoRA
        with pytest.raises(ConfigError, match=match):
            resolve_adapter_config(method, AdapterConfig(**option))


def test_methods_without_adapter_options_reject_them():
    for method in ("bitfit", "linear-probe-cached"):
        with pytest.raises(ConfigError, match="takes no adapter options"):
            resolve_adapter_config(method, AdapterConfig(rank=4))


def test_extract_features_are_the_classifier_input(tiny_vit):
    model = tiny_vit()
    loader = [(X, torch.tensor([0, 1]), 0)]
    f, y, skipped, _ = extract_features(model, loader, torch.device("cpu"))
    assert f.shape == (2, 192) and skipped == 0 and y.tolist() == [0, 1]
    torch.testing.assert_close(model.head(f), model(X))


def test_linear_probe_cached_equals_head_without_augmentation(run_config, image_folder, tmp_path):
    train = {"epochs": 2, "batch_size": 16, "seed": 0}
    head = run(run_config(image_folder, tmp_path / "head", "head", data={"subset": 16, "augment": False}, **train))
    # augmentation is off by definition of the method
    cached = run(
        run_config(image_folder, tmp_path / "linear-probe-cached", "linear-probe-cached", data={"subset": 16}, **train)
    )
    assert cached.protocol["augment"] == "none" and cached.trainable_params == head.trainable_params
    assert cached.test_acc == head.test_acc and cached.best_val_acc == head.best_val_acc
    a, _ = load_tensors(tmp_path / "head" / "adaptertune_weights.safetensors")
    b, meta = load_tensors(tmp_path / "linear-probe-cached" / "adaptertune_weights.safetensors")
    assert set(a) == set(b) == {"head.weight", "head.bias"} and meta["method"] == "linear-probe-cached"
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-6)


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
