"""BitFit (methods/bitfit.py): the biases and the head train, nothing else."""

from adaptertune.methods import build_method
from helpers import trainable_names


def test_bitfit_trains_biases_and_head(tiny_vit):
    model = build_method("bitfit", tiny_vit(), None)
    names = trainable_names(model)
    assert names and all(n.endswith(".bias") or n.startswith("head.") for n in names)
    assert "head.weight" in names and "blocks.0.attn.qkv.bias" in names and "blocks.0.norm1.bias" in names
