"""LayerNorm tuning (methods/ln_tuning.py): every norm's weight and bias and the head train; nothing is added."""

import pytest
import torch

from adaptertune.methods import METHODS, build_method
from petl_checks import (
    HEAD_100,
    VARIANTS,
    X,
    frozen_unchanged_after_training,
    merge_to_plain_timm,
    n_trainable,
    resumed_equals_uninterrupted,
    variant_vit,
    vit_b,
)

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: more threads only fight over a busy machine


def test_ln_size_on_vit_b():
    assert n_trainable(build_method("ln", vit_b(), None)) == 38_400 + HEAD_100 == 25 * 2 * 768 + HEAD_100


@pytest.mark.parametrize("variant", VARIANTS)
def test_norms_and_head_train_the_rest_stays(variant):
    plain = variant_vit(variant)
    keys, ref = set(plain.state_dict()), plain(X)
    model = build_method("ln", variant_vit(variant), None)
    names = {n for n, p in model.named_parameters() if p.requires_grad}
    final = "fc_norm" if variant == "avg" else "norm"
    want = {f"blocks.{i}.norm{k}.{t}" for i in range(12) for k in (1, 2) for t in ("weight", "bias")}
    assert names == want | {f"{final}.weight", f"{final}.bias", "head.weight", "head.bias"}
    assert torch.equal(model(X), ref) and set(model.state_dict()) == keys
    assert frozen_unchanged_after_training(model) == []
    assert merge_to_plain_timm("ln", model, variant, folds=False) == 0.0  # nothing to fold: the model is plain


def test_resume_is_exact(tmp_path):
    assert resumed_equals_uninterrupted(tmp_path, "ln", None) == []
    assert "timm" in METHODS.get("ln").export_formats()
