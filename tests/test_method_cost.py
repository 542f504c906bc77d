"""What a method costs, by formula: every registered method's trainable-parameter formula
(``Method.trainable_params``) against the parameters that train on the built model, on the tiny ViT and on ViT-B/16
(the counts in METHODS.md), with no test code per method."""

from __future__ import annotations

import pytest

from adaptertune.methods import METHODS
from adaptertune.methods.flops import vit_geometry
from adaptertune.vit import trainable_parameters


def _count(info, model, options, num_classes):
    if info.name in ("lora", "dora"):
        pytest.importorskip("peft")
    formula = info.trainable_params(vit_geometry(model), options, num_classes)
    assert formula is not None, f"method '{info.name}' has no trainable-parameter formula"
    return formula, trainable_parameters(info.build(model, options)).trainable


@pytest.mark.parametrize("method", METHODS.names())
def test_trainable_params_formula_on_the_tiny_vit(method, tiny_vit):
    info = METHODS.get(method)
    formula, built = _count(info, tiny_vit(num_classes=7), info.resolve(None), 7)
    assert formula == built


# METHODS.md (ViT-B/16, trainable parameters without the head; a 100-class head adds 76,900)
VIT_B = {
    "lora": ({"rank": 8}, 294_912),
    "parallel": ({"rank": 4}, 82_992),
    "bitfit": (None, 102_912),
    "head": (None, 0),
    "linear-probe-cached": (None, 0),
    "adapter": ({"rank": 8}, 12 * (2 * 768 * 8 + 8 + 768)),  # AdapterTune: down and up with biases, every block
    "full": (None, 85_798_656),  # timm's vit_base_patch16_224 without its head
    "ssf": (None, 205_824),
    "ln": (None, 38_400),
    "difffit": (None, 140_544),
    "selective": ({"parts": "qkv"}, 5_315_328),  # 3 blocks' qkv (the default trains the 3 blocks whole)
    "dora": ({"rank": 8}, 322_560),
    "adapter-plus": ({"rank": 8}, 165_984),
    "repadapter": ({"rank": 8, "groups": 2}, 239_808),
    "fact-tt": ({"rank": 8}, 21_504),
    "fact-tk": ({"rank": 16}, 30_976),
}


@pytest.mark.slow
@pytest.mark.parametrize("method", METHODS.names())
def test_trainable_params_formula_on_vit_b(method):
    import timm

    info = METHODS.get(method)
    options, published = VIT_B.get(method, (None, None))
    model = timm.create_model("vit_base_patch16_224", pretrained=False, num_classes=100)
    formula, built = _count(info, model, info.resolve(options), 100)
    assert formula == built
    if published is not None:
        assert formula == published + 76_900
